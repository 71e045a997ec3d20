//! "Did you mean" hints: the closest known name to a misspelt one.

/// Longest name compared; longer inputs get no suggestion (bounds the edit-distance table).
const SUGGEST_NAME_LEN_MAX: usize = 64;
/// Most candidates compared (a file may define many names).
const SUGGEST_CANDIDATES_MAX: usize = 1000;

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if name.len() > SUGGEST_NAME_LEN_MAX {
        return None;
    }
    let allowed = (name.chars().count() / 3).clamp(1, 3);
    let lower = name.to_lowercase();
    let candidates: Vec<&str> = candidates
        .into_iter()
        .take(SUGGEST_CANDIDATES_MAX)
        .filter(|c| c.len() <= SUGGEST_NAME_LEN_MAX && *c != name)
        .collect();
    let by_distance = candidates
        .iter()
        .map(|c| (distance(&lower, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    // A shortened name (`prod` for `production`, `attempts` for `max_attempts`) is as
    // likely as a typo.
    by_distance.or_else(|| {
        let mut prefixed = candidates
            .iter()
            .filter(|c| lower.len() >= 3 && c.to_lowercase().contains(&lower));
        match (prefixed.next(), prefixed.next()) {
            (Some(only), None) => Some(*only),
            _ => None,
        }
    })
}

/// A "did you mean `x`?" hint, when a candidate is close.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// Levenshtein distance over chars, counting a swap of two neighbours as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        prev2 = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_intended_name() {
        let known = ["replicas", "priority", "command", "args"];
        assert_eq!(closest("replicaz", known), Some("replicas"));
        assert_eq!(closest("priorty", known), Some("priority"));
        assert_eq!(closest("comand", known), Some("command"));
        assert_eq!(closest("agrs", known), Some("args"));
        assert_eq!(closest("something_else", known), None);
        assert_eq!(closest("Replicas", known), Some("replicas"));
        assert_eq!(closest("prio", known), Some("priority"));
        assert_eq!(closest("co", known), None);
        assert_eq!(
            closest("attempts", ["max_attempts", "delay"]),
            Some("max_attempts")
        );
    }
}
