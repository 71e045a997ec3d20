//! The scheduler's fit policies by name, for the CLI and the benchmarks.

use scheduler::FitPolicy;

/// Every policy the scheduler offers.
pub const FIT_POLICIES: [FitPolicy; 3] =
    [FitPolicy::Hybrid, FitPolicy::BestFit, FitPolicy::WorstFit];

/// The policy called `name` (as `FitPolicy::name` spells it).
pub fn parse(name: &str) -> Option<FitPolicy> {
    FIT_POLICIES.into_iter().find(|p| p.name() == name)
}

/// The names, for error messages.
pub fn names() -> String {
    FIT_POLICIES
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
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
}
