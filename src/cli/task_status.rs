//! `borg job status JOB/INDEX`: one task's record (state, machine, incarnation, usage and
//! reservation) and its history from the cell's event log: scheduled, running, exited,
//! restarted, preempted, lost, ssh sessions.

use super::job::get_job;
use super::logs::parse_task;
use super::render::{format_age, table, task_json, task_state_name};
use super::{master_client, GlobalArgs, OutputFormat};
use crate::cli::rpc::cell_client;
use anyhow::Context;
use borg_common::now_ms;
use borg_model::Resources;
use borg_proto::v1;
use serde_json::{json, Value};

/// Events shown per task (the master returns at most this many, newest).
const TASK_EVENTS_SHOWN_MAX: u32 = 50;

/// Prints task `target` (`JOB/INDEX`) with its events.
pub async fn run(target: &str, consistent: bool, global: &GlobalArgs) -> anyhow::Result<()> {
    let (job_name, index) = parse_task(target)?;
    let client = master_client(global)?;
    let job = get_job(&client, &job_name, consistent).await?;
    let task = job
        .tasks
        .iter()
        .find(|t| t.index == index)
        .with_context(|| {
            format!(
                "job {job_name:?} has no task {index} (it has {}): see `borg job status {job_name}`",
                job.tasks.len()
            )
        })?;
    let request = v1::ListTaskEventsRequest {
        job: job_name.clone(),
        index,
        limit: TASK_EVENTS_SHOWN_MAX,
        consistent,
    };
    let events = client
        .call(|channel| {
            let request = request.clone();
            async move {
                cell_client(channel)
                    .list_task_events(request)
                    .await
                    .map(|r| r.into_inner().events)
            }
        })
        .await
        .with_context(|| format!("reading the events of {target}"))?;
    match global.output {
        OutputFormat::Json => println!("{:#}", task_status_json(task, &events)),
        OutputFormat::Text => print!("{}", task_status_text(task, &events, now_ms())),
    }
    Ok(())
}

fn task_status_json(task: &v1::Task, events: &[v1::Event]) -> Value {
    let mut out = task_json(task);
    out["events"] = events
        .iter()
        .map(|e| {
            json!({
                "index": e.index,
                "time_ms": e.time_ms,
                "kind": e.kind,
                "machine": e.machine,
                "message": e.message,
            })
        })
        .collect();
    out
}

fn task_status_text(task: &v1::Task, events: &[v1::Event], now_ms: u64) -> String {
    let or_dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
    let resources = |r: Option<v1::Resources>| {
        r.map(|r| Resources::from(r).to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut out = format!(
        "Task          {}/{}\nState         {} for {}\nMachine       {}\nIncarnation   {}\nRestarts      {}\nPID           {}\nExit code     {}\nUsage         {}\nReservation   {}\nPorts         {}\nMessage       {}\n",
        task.job,
        task.index,
        task_state_name(task.state),
        format_age(now_ms.saturating_sub(task.state_since_ms)),
        or_dash(task.machine.clone()),
        task.incarnation,
        task.restarts,
        if task.pid == 0 { "-".into() } else { task.pid.to_string() },
        task.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
        resources(task.usage),
        resources(task.reservation),
        or_dash(ports_text(&task.ports)),
        or_dash(task.message.clone()),
    );
    out.push_str("\nEvents\n");
    if events.is_empty() {
        out.push_str("(none retained)\n");
        return out;
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                format_age(now_ms.saturating_sub(e.time_ms)),
                e.kind.clone(),
                or_dash(e.machine.clone()),
                e.message.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["AGO", "KIND", "MACHINE", "MESSAGE"], &rows));
    out.push('\n');
    out
}

/// `http=20001 admin=20002`, in name order.
fn ports_text(ports: &std::collections::HashMap<String, u32>) -> String {
    let sorted: std::collections::BTreeMap<_, _> = ports.iter().collect();
    sorted
        .iter()
        .map(|(name, port)| format!("{name}={port}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> v1::Task {
        v1::Task {
            job: "web".into(),
            index: 1,
            state: v1::TaskState::Running as i32,
            machine: "m1".into(),
            incarnation: 2,
            pid: 42,
            state_since_ms: 1_000,
            reservation: Some(v1::Resources {
                cpu_millis: 250,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn events() -> Vec<v1::Event> {
        vec![v1::Event {
            index: 9,
            time_ms: 2_000,
            kind: "task_ssh_session".into(),
            job: "web".into(),
            task_index: Some(1),
            machine: "m1".into(),
            message: "incarnation 2: shell by bob".into(),
        }]
    }

    #[test]
    fn the_text_shows_the_task_and_its_events() {
        let text = task_status_text(&task(), &events(), 61_000);
        assert!(text.starts_with("Task          web/1\n"), "{text}");
        assert!(text.contains("State         running for 1m0s"), "{text}");
        assert!(text.contains("Reservation   cpu=250m"), "{text}");
        assert!(text.contains("Usage         -"), "{text}");
        assert!(
            text.contains("59s  task_ssh_session  m1       incarnation 2: shell by bob"),
            "{text}"
        );
        let none = task_status_text(&task(), &[], 61_000);
        assert!(none.ends_with("(none retained)\n"), "{none}");
    }

    #[test]
    fn the_json_adds_the_events_to_the_task() {
        let value = task_status_json(&task(), &events());
        assert_eq!(value["index"], 1);
        assert_eq!(value["reservation"]["cpu_millis"], 250);
        assert_eq!(value["events"][0]["kind"], "task_ssh_session");
    }
}
