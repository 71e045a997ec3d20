//! Evaluating job constraints against machine attributes.

use borg_model::{Constraint, ConstraintOp};
use regex::{Regex, RegexBuilder};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Most memory a compiled constraint regex may use: a user's pattern must not exhaust the
/// scheduler.
pub const CONSTRAINT_REGEX_SIZE_MAX_BYTES: usize = 1 << 20;

/// A constraint ready to evaluate: its regex compiled once per equivalence class.
#[derive(Debug, Clone)]
pub struct CompiledConstraint {
    pub constraint: Constraint,
    /// `Some` for `Regex`; `None` inside when the pattern does not compile (the constraint
    /// then matches no machine, and "why pending" counts every machine as failing it).
    regex: Option<Option<Regex>>,
}

impl CompiledConstraint {
    pub fn new(constraint: &Constraint) -> Self {
        let regex = (constraint.op == ConstraintOp::Regex).then(|| {
            constraint.values.first().and_then(|pattern| {
                RegexBuilder::new(pattern)
                    .size_limit(CONSTRAINT_REGEX_SIZE_MAX_BYTES)
                    .build()
                    .ok()
            })
        });
        CompiledConstraint {
            constraint: constraint.clone(),
            regex,
        }
    }

    /// Whether a machine with these attributes satisfies the constraint. A missing attribute
    /// satisfies only the negative operators (`Ne`, `NotIn`).
    pub fn matches(&self, attributes: &BTreeMap<String, String>) -> bool {
        let c = &self.constraint;
        let first = c.values.first().map(String::as_str);
        let Some(value) = attributes.get(&c.attribute) else {
            return matches!(c.op, ConstraintOp::Ne | ConstraintOp::NotIn);
        };
        match c.op {
            ConstraintOp::Exists => true,
            ConstraintOp::Eq => first == Some(value.as_str()),
            ConstraintOp::Ne => first != Some(value.as_str()),
            ConstraintOp::In => c.values.iter().any(|v| v == value),
            ConstraintOp::NotIn => !c.values.iter().any(|v| v == value),
            ConstraintOp::Regex => matches!(&self.regex, Some(Some(re)) if re.is_match(value)),
            ConstraintOp::VersionGe => {
                first.is_some_and(|v| compare_versions(value, v) != Ordering::Less)
            }
            ConstraintOp::VersionLt => {
                first.is_some_and(|v| compare_versions(value, v) == Ordering::Less)
            }
        }
    }
}

/// Compares dotted versions component by component: numerically where both components are
/// numbers, as text otherwise; missing components count as zero (`1.2` == `1.2.0`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut left = a.trim().split('.');
    let mut right = b.trim().split('.');
    loop {
        let (l, r) = match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (l, r) => (l.unwrap_or("0"), r.unwrap_or("0")),
        };
        let order = match (l.parse::<u64>(), r.parse::<u64>()) {
            (Ok(l), Ok(r)) => l.cmp(&r),
            _ => l.cmp(r),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// A human form of a constraint for "why pending" (`rack in [r1, r2]`).
pub fn describe(c: &Constraint) -> String {
    let op = match c.op {
        ConstraintOp::Eq => "==",
        ConstraintOp::Ne => "!=",
        ConstraintOp::Regex => "=~",
        ConstraintOp::In => "in",
        ConstraintOp::NotIn => "not in",
        ConstraintOp::VersionGe => ">= (version)",
        ConstraintOp::VersionLt => "< (version)",
        ConstraintOp::Exists => return format!("{} exists", c.attribute),
    };
    match c.op {
        ConstraintOp::In | ConstraintOp::NotIn => {
            format!("{} {op} [{}]", c.attribute, c.values.join(", "))
        }
        _ => format!(
            "{} {op} {}",
            c.attribute,
            c.values.first().map(String::as_str).unwrap_or("")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn c(attribute: &str, op: ConstraintOp, values: &[&str]) -> CompiledConstraint {
        CompiledConstraint::new(&Constraint {
            attribute: attribute.into(),
            op,
            values: values.iter().map(|v| v.to_string()).collect(),
            soft: false,
        })
    }

    #[test]
    fn each_operator_matches_as_documented() {
        let m = attrs(&[("rack", "r1"), ("os", "6.1.12"), ("host", "web-17")]);
        let empty = attrs(&[]);
        use ConstraintOp::*;

        assert!(c("rack", Eq, &["r1"]).matches(&m));
        assert!(!c("rack", Eq, &["r2"]).matches(&m));
        assert!(!c("rack", Eq, &["r1"]).matches(&empty));

        assert!(c("rack", Ne, &["r2"]).matches(&m));
        assert!(!c("rack", Ne, &["r1"]).matches(&m));
        assert!(c("rack", Ne, &["r1"]).matches(&empty));

        assert!(c("host", Regex, &["^web-[0-9]+$"]).matches(&m));
        assert!(!c("host", Regex, &["^db-"]).matches(&m));
        assert!(
            !c("host", Regex, &["("]).matches(&m),
            "a bad regex matches nothing"
        );

        assert!(c("rack", In, &["r0", "r1"]).matches(&m));
        assert!(!c("rack", In, &["r2", "r3"]).matches(&m));
        assert!(!c("rack", In, &["r1"]).matches(&empty));

        assert!(c("rack", NotIn, &["r2", "r3"]).matches(&m));
        assert!(!c("rack", NotIn, &["r1"]).matches(&m));
        assert!(c("rack", NotIn, &["r1"]).matches(&empty));

        assert!(c("os", VersionGe, &["6.1"]).matches(&m));
        assert!(c("os", VersionGe, &["6.1.12"]).matches(&m));
        assert!(!c("os", VersionGe, &["6.10"]).matches(&m));
        assert!(c("os", VersionLt, &["6.10"]).matches(&m));
        assert!(!c("os", VersionLt, &["6.1.12"]).matches(&m));
        assert!(!c("os", VersionLt, &["7"]).matches(&empty));

        assert!(c("rack", Exists, &[]).matches(&m));
        assert!(!c("gpu", Exists, &[]).matches(&m));
    }

    #[test]
    fn versions_compare_numerically_by_component() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.2", "1.2.0"), Ordering::Equal);
        assert_eq!(compare_versions("2", "10"), Ordering::Less);
        assert_eq!(compare_versions("1.a", "1.b"), Ordering::Less);
    }

    #[test]
    fn descriptions_read_like_the_constraint() {
        assert_eq!(
            describe(&c("rack", ConstraintOp::In, &["r1", "r2"]).constraint),
            "rack in [r1, r2]"
        );
        assert_eq!(
            describe(&c("gpu", ConstraintOp::Exists, &[]).constraint),
            "gpu exists"
        );
    }
}
