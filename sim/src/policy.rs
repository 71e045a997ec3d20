//! The scheduler's fit policies and queue orders by name, for the CLI and the benchmarks.

use scheduler::{FitPolicy, QueueOrder};

/// Every queue order the scheduler offers.
pub const QUEUE_ORDERS: [QueueOrder; 2] = [QueueOrder::RoundRobin, QueueOrder::LargestFirst];

/// The queue order called `name` (as `QueueOrder::name` spells it).
pub fn parse_queue_order(name: &str) -> Option<QueueOrder> {
    QUEUE_ORDERS.into_iter().find(|o| o.name() == name)
}

/// The queue orders' names, for error messages.
pub fn queue_order_names() -> String {
    QUEUE_ORDERS.map(QueueOrder::name).join(", ")
}

/// Every policy the scheduler offers.
pub const FIT_POLICIES: [FitPolicy; 3] =
    [FitPolicy::Hybrid, FitPolicy::BestFit, FitPolicy::WorstFit];

/// The policy called `name` (as `FitPolicy::name` spells it).
pub fn parse(name: &str) -> Option<FitPolicy> {
    FIT_POLICIES.into_iter().find(|p| p.name() == name)
}

/// The names, for error messages.
pub fn names() -> String {
    FIT_POLICIES.map(FitPolicy::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_parses_by_its_name() {
        for policy in FIT_POLICIES {
            assert_eq!(parse(policy.name()), Some(policy));
        }
        assert_eq!(parse("first-fit"), None);
        assert!(names().contains("hybrid"));
    }

    #[test]
    fn every_queue_order_parses_by_its_name() {
        for order in QUEUE_ORDERS {
            assert_eq!(parse_queue_order(order.name()), Some(order));
        }
        assert_eq!(parse_queue_order("fifo"), None);
        assert!(queue_order_names().contains("largest-first"));
    }
}
