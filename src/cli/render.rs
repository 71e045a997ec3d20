//! Turning wire objects into tables for people and JSON for programs.

use borg_model::resources::format_bytes;
use borg_proto::v1;
use serde_json::{json, Value};

/// Printable name of a wire task state.
pub fn task_state_name(state: i32) -> &'static str {
    borg_proto::convert::task_state_from_wire(state)
        .map(|s| s.name())
        .unwrap_or("unknown")
}

pub fn job_state_name(state: i32) -> &'static str {
    match v1::JobState::try_from(state) {
        Ok(v1::JobState::Active) => "active",
        Ok(v1::JobState::Killed) => "killed",
        Ok(v1::JobState::Done) => "done",
        _ => "unknown",
    }
}

pub fn machine_state_name(state: i32) -> &'static str {
    borg_proto::convert::machine_state_from_wire(state)
        .map(|s| s.name())
        .unwrap_or("unknown")
}

/// `3s`, `4m12s`, `2h5m`, `3d4h`.
pub fn format_age(age_ms: u64) -> String {
    let s = age_ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Counts of a job's tasks per state, in lifecycle order.
pub fn task_summary(job: &v1::Job) -> Vec<(&'static str, usize)> {
    const ORDER: [&str; 7] = [
        "pending",
        "scheduled",
        "running",
        "succeeded",
        "failed",
        "killed",
        "lost",
    ];
    ORDER
        .iter()
        .map(|name| {
            let count = job
                .tasks
                .iter()
                .filter(|t| task_state_name(t.state) == *name)
                .count();
            (*name, count)
        })
        .collect()
}

/// Left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn job_text(job: &v1::Job, now_ms: u64) -> String {
    let spec = job.spec.clone().unwrap_or_default();
    let band = borg_model::Band::of(spec.priority).name();
    let job_type = match v1::JobType::try_from(spec.job_type) {
        Ok(v1::JobType::Batch) => "batch",
        _ => "service",
    };
    let mut out = format!(
        "Job           {}\nOwner         {}\nPriority      {} ({band})\nType          {job_type}\nState         {}\nReplicas      {}\nModify index  {}\n",
        spec.name,
        spec.owner,
        spec.priority,
        job_state_name(job.state),
        spec.replicas,
        job.modify_index,
    );
    match &spec.task {
        Some(task) if spec.is_alloc_set => out.push_str(&format!(
            "Reserves      {} per alloc\n",
            borg_proto::convert::resources_or_zero(task.resources)
        )),
        Some(task) => out.push_str(&format!("Command       {}\n", command_line(task))),
        None => {}
    }
    if !spec.alloc_set.is_empty() {
        out.push_str(&format!(
            "Alloc set     {} (task i runs in alloc i)\n",
            spec.alloc_set
        ));
    }
    let mut overrides: Vec<_> = spec.task_overrides.iter().collect();
    overrides.sort_by_key(|(index, _)| **index);
    for (n, (index, task)) in overrides.into_iter().enumerate() {
        let resources = borg_proto::convert::resources_or_zero(task.resources);
        out.push_str(&format!(
            "{:<14}task {index}: {} ({resources})\n",
            if n == 0 { "Overrides" } else { "" },
            command_line(task)
        ));
    }
    let summary = task_summary(job);
    out.push_str("\nSummary\n");
    out.push_str(&table(
        &summary.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        &[summary.iter().map(|(_, c)| c.to_string()).collect()],
    ));
    out.push_str("\n\nTasks\n");
    let rows: Vec<Vec<String>> = job
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.index.to_string(),
                task_state_name(t.state).to_owned(),
                if t.machine.is_empty() {
                    "-".into()
                } else {
                    t.machine.clone()
                },
                t.restarts.to_string(),
                if t.pid == 0 {
                    "-".into()
                } else {
                    t.pid.to_string()
                },
                format_age(now_ms.saturating_sub(t.state_since_ms)),
                t.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                t.message.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "INDEX", "STATE", "MACHINE", "RESTARTS", "PID", "AGE", "EXIT", "MESSAGE",
        ],
        &rows,
    ));
    out
}

/// Whether a wire job is an alloc set (its tasks are allocs).
pub fn is_alloc_set(job: &v1::Job) -> bool {
    job.spec.as_ref().is_some_and(|s| s.is_alloc_set)
}

/// A template's command and arguments as one line (arguments with spaces quoted).
pub fn command_line(task: &v1::TaskTemplate) -> String {
    std::iter::once(task.command.clone())
        .chain(task.args.iter().map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

fn template_json(t: &v1::TaskTemplate) -> Value {
    json!({
        "command": t.command,
        "args": t.args,
        "env": t.env.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "resources": t.resources.as_ref().map(resources_json),
        "ports": t.ports,
    })
}

pub fn job_json(job: &v1::Job) -> Value {
    let spec = job.spec.clone().unwrap_or_default();
    let summary: serde_json::Map<String, Value> = task_summary(job)
        .into_iter()
        .map(|(name, count)| (name.to_owned(), json!(count)))
        .collect();
    json!({
        "name": spec.name,
        "owner": spec.owner,
        "priority": spec.priority,
        "band": borg_model::Band::of(spec.priority).name(),
        "replicas": spec.replicas,
        "state": job_state_name(job.state),
        "create_index": job.create_index,
        "modify_index": job.modify_index,
        "submitted_ms": job.submitted_ms,
        "is_alloc_set": spec.is_alloc_set,
        "alloc_set": (!spec.alloc_set.is_empty()).then_some(&spec.alloc_set),
        "task": spec.task.as_ref().map(template_json),
        "task_overrides": spec
            .task_overrides
            .iter()
            .map(|(index, t)| (index.to_string(), template_json(t)))
            .collect::<serde_json::Map<String, Value>>(),
        "summary": summary,
        "tasks": job.tasks.iter().map(task_json).collect::<Vec<_>>(),
    })
}

pub fn task_json(t: &v1::Task) -> Value {
    json!({
        "job": t.job,
        "index": t.index,
        "state": task_state_name(t.state),
        "machine": t.machine,
        "incarnation": t.incarnation,
        "restarts": t.restarts,
        "exit_code": t.exit_code,
        "pid": t.pid,
        "state_since_ms": t.state_since_ms,
        "message": t.message,
        "usage": t.usage.as_ref().map(resources_json),
        "reservation": t.reservation.as_ref().map(resources_json),
        "ports": t.ports.iter().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

pub fn resources_json(r: &v1::Resources) -> Value {
    json!({"cpu_millis": r.cpu_millis, "ram_bytes": r.ram_bytes, "disk_bytes": r.disk_bytes, "gpus": r.gpus})
}

pub fn jobs_text(jobs: &[v1::Job]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let spec = job.spec.clone().unwrap_or_default();
            let running = job
                .tasks
                .iter()
                .filter(|t| task_state_name(t.state) == "running")
                .count();
            vec![
                spec.name,
                spec.owner,
                spec.priority.to_string(),
                job_state_name(job.state).to_owned(),
                format!("{running}/{}", spec.replicas),
            ]
        })
        .collect();
    table(&["NAME", "OWNER", "PRIORITY", "STATE", "RUNNING"], &rows)
}

pub fn machines_text(machines: &[v1::Machine], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = machines
        .iter()
        .map(|m| {
            let info = m.info.clone().unwrap_or_default();
            let cap = borg_proto::convert::resources_or_zero(info.capacity);
            let alloc = borg_proto::convert::resources_or_zero(m.allocated);
            vec![
                info.name,
                machine_state_name(m.state).to_owned(),
                info.address,
                format!("{}/{}m", alloc.cpu_millis, cap.cpu_millis),
                format!(
                    "{}/{}",
                    format_bytes(alloc.ram_bytes),
                    format_bytes(cap.ram_bytes)
                ),
                m.task_count.to_string(),
                if m.last_report_ms == 0 {
                    "never".into()
                } else {
                    format!(
                        "{} ago",
                        format_age(now_ms.saturating_sub(m.last_report_ms))
                    )
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "ADDRESS",
            "CPU",
            "RAM",
            "TASKS",
            "LAST REPORT",
        ],
        &rows,
    )
}

pub fn machine_json(m: &v1::Machine) -> Value {
    let info = m.info.clone().unwrap_or_default();
    let cap = borg_proto::convert::resources_or_zero(info.capacity);
    let alloc = borg_proto::convert::resources_or_zero(m.allocated);
    json!({
        "name": info.name,
        "address": info.address,
        "state": machine_state_name(m.state),
        "version": m.version,
        "capacity": {"cpu_millis": cap.cpu_millis, "ram_bytes": cap.ram_bytes, "disk_bytes": cap.disk_bytes, "gpus": cap.gpus},
        "allocated": {"cpu_millis": alloc.cpu_millis, "ram_bytes": alloc.ram_bytes, "disk_bytes": alloc.disk_bytes, "gpus": alloc.gpus},
        "attributes": info.attributes,
        "task_count": m.task_count,
        "last_report_ms": m.last_report_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(format_age(3_400), "3s");
        assert_eq!(format_age(252_000), "4m12s");
        assert_eq!(format_age(7_500_000), "2h5m");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["wide-cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONGER\nwide-cell  x");
    }

    #[test]
    fn per_task_overrides_are_shown_with_the_job() {
        let template = |args: &[&str], cpu_millis| v1::TaskTemplate {
            command: "/bin/sh".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            resources: Some(v1::Resources {
                cpu_millis,
                ram_bytes: 16 << 20,
                ..Default::default()
            }),
            ..Default::default()
        };
        let job = v1::Job {
            spec: Some(v1::JobSpec {
                name: "db".into(),
                replicas: 2,
                task: Some(template(&["-c", "echo base"], 10)),
                task_overrides: [(1, template(&["-c", "echo one"], 20))].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = job_text(&job, 0);
        assert!(
            text.contains("Command       /bin/sh -c \"echo base\""),
            "{text}"
        );
        assert!(
            text.contains("Overrides     task 1: /bin/sh -c \"echo one\" (cpu=20m ram=16Mi"),
            "{text}"
        );
        let json = job_json(&job);
        assert_eq!(json["task_overrides"]["1"]["args"][1], "echo one");
        assert_eq!(json["task"]["args"][1], "echo base");
    }

    #[test]
    fn the_summary_counts_each_state() {
        let job = v1::Job {
            tasks: vec![
                v1::Task {
                    state: v1::TaskState::Running as i32,
                    ..Default::default()
                },
                v1::Task {
                    state: v1::TaskState::Running as i32,
                    ..Default::default()
                },
                v1::Task {
                    state: v1::TaskState::Pending as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let summary = task_summary(&job);
        assert!(summary.contains(&("running", 2)));
        assert!(summary.contains(&("pending", 1)));
        assert!(summary.contains(&("failed", 0)));
    }
}
