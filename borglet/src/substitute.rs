//! Runtime substitutions in a task's args and env values: `%job%`, `%task_index%`, `%user%`,
//! `%cell%`, `%port%` (the task's first named port) and `%port:NAME%`.

/// Values substituted into one task's args and env.
#[derive(Debug, Clone, Copy)]
pub struct Substitutions<'a> {
    pub job: &'a str,
    pub task_index: u32,
    pub user: &'a str,
    /// Name of the cell the borglet serves.
    pub cell: &'a str,
    /// The task's first named port (`%port%`), if it has any.
    pub first_port: Option<u16>,
    /// Every named port of the task (`%port:NAME%`).
    pub ports: &'a crate::ports::TaskPorts,
}

/// Replaces every known `%name%` in one pass (a substituted value is never scanned again);
/// unknown names and lone `%` are kept as written.
pub fn substitute(text: &str, subs: &Substitutions<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let known = after.find('%').and_then(|end| {
            let value = match &after[..end] {
                "job" => subs.job.to_owned(),
                "task_index" => subs.task_index.to_string(),
                "user" => subs.user.to_owned(),
                "cell" => subs.cell.to_owned(),
                "port" => subs.first_port?.to_string(),
                // `%port:NAME%`; any other name is not ours and stays as written.
                name => subs.ports.get(name.strip_prefix("port:")?)?.to_string(),
            };
            Some((value, end))
        });
        match known {
            Some((value, end)) => {
                out.push_str(&value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBS: Substitutions<'static> = Substitutions {
        job: "web",
        task_index: 7,
        user: "alice",
        cell: "ic",
        first_port: None,
        ports: &NO_PORTS,
    };

    static NO_PORTS: crate::ports::TaskPorts = crate::ports::TaskPorts::new();

    #[test]
    fn known_names_are_replaced() {
        assert_eq!(substitute("--shard=%task_index%", &SUBS), "--shard=7");
        assert_eq!(
            substitute("%job%-%task_index%.%user%", &SUBS),
            "web-7.alice"
        );
        assert_eq!(substitute("plain", &SUBS), "plain");
        assert_eq!(substitute("%user%@%cell%", &SUBS), "alice@ic");
    }

    #[test]
    fn unknown_names_and_lone_percents_are_kept() {
        assert_eq!(substitute("%port%", &SUBS), "%port%");
        assert_eq!(substitute("100%", &SUBS), "100%");
        assert_eq!(substitute("50% of %job%", &SUBS), "50% of web");
        assert_eq!(substitute("%%job%%", &SUBS), "%web%");
    }

    #[test]
    fn ports_are_substituted_by_position_and_by_name() {
        let ports =
            crate::ports::TaskPorts::from([("http".into(), 20001), ("admin".into(), 20002)]);
        let subs = Substitutions {
            first_port: Some(20001),
            ports: &ports,
            ..SUBS
        };
        assert_eq!(substitute("--port=%port%", &subs), "--port=20001");
        assert_eq!(substitute("%port:admin%/%port:http%", &subs), "20002/20001");
        assert_eq!(substitute("%port:none%", &subs), "%port:none%");
    }

    #[test]
    fn substituted_values_are_not_scanned_again() {
        let subs = Substitutions {
            job: "%user%",
            task_index: 0,
            user: "bob",
            cell: "ic",
            first_port: None,
            ports: &NO_PORTS,
        };
        assert_eq!(substitute("%job%", &subs), "%user%");
    }
}
