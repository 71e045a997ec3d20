//! Requests from the wire into log commands, and state errors into statuses: validation at
//! the edge, so bad input is refused before it reaches the log.

use crate::state::{MachineReport, PlannedPlacement, QuotaUsage, StateError, TaskReport};
use borg_model::{is_valid_name, Band, JobSpec, MachineInfo, TaskId};
use borg_proto::convert::{resources_or_zero, task_state_from_wire};
use borg_proto::v1;
use tonic::Status;

/// Most placements accepted in one plan.
pub const PLAN_PLACEMENTS_MAX: usize = 10_000;
/// Most victims named by one placement.
pub const PLACEMENT_PREEMPT_MAX: usize = 1_000;
/// Most machine diffs in one `ForwardDiffs`.
pub const FORWARD_DIFFS_MAX: usize = 10_000;
/// Most task reports in one machine diff.
pub const DIFF_TASKS_MAX: usize = 10_000;
/// Longest request id accepted (ids are kept in the dedup window).
pub const REQUEST_ID_MAX_LEN: usize = 256;

pub fn request_id(id: &str) -> Result<String, Status> {
    if id.len() > REQUEST_ID_MAX_LEN {
        return Err(Status::invalid_argument(format!(
            "request_id is {} bytes long; the most is {REQUEST_ID_MAX_LEN}",
            id.len()
        )));
    }
    Ok(id.to_owned())
}

pub fn name(field: &str, value: &str) -> Result<String, Status> {
    if is_valid_name(value) {
        Ok(value.to_owned())
    } else {
        Err(Status::invalid_argument(format!(
            "{field} {value:?} is invalid: use 1-128 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

pub fn job_spec(spec: Option<v1::JobSpec>) -> Result<JobSpec, Status> {
    let spec = spec.ok_or_else(|| Status::invalid_argument("field `spec` is required"))?;
    let spec = JobSpec::try_from(spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
    spec.validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(spec)
}

pub fn machine_info(info: Option<v1::MachineInfo>) -> Result<MachineInfo, Status> {
    let info = MachineInfo::from(
        info.ok_or_else(|| Status::invalid_argument("field `info` is required"))?,
    );
    name("machine name", &info.name)?;
    if info.address.is_empty() {
        return Err(Status::invalid_argument(format!(
            "machine {:?} has no address: the borglet must register its host:port",
            info.name
        )));
    }
    Ok(info)
}

fn task_ref(task: Option<v1::TaskRef>, field: &str) -> Result<(TaskId, u64), Status> {
    let task =
        task.ok_or_else(|| Status::invalid_argument(format!("field `{field}` is required")))?;
    name("job name", &task.job)?;
    Ok((TaskId::new(task.job, task.index), task.incarnation))
}

pub fn placements(placements: Vec<v1::Placement>) -> Result<Vec<PlannedPlacement>, Status> {
    if placements.len() > PLAN_PLACEMENTS_MAX {
        return Err(Status::invalid_argument(format!(
            "plan has {} placements; the most is {PLAN_PLACEMENTS_MAX}: split it",
            placements.len()
        )));
    }
    placements
        .into_iter()
        .map(|p| {
            let (task, incarnation) = task_ref(p.task, "placement.task")?;
            let machine = name("machine name", &p.machine)?;
            if p.preempt.len() > PLACEMENT_PREEMPT_MAX {
                return Err(Status::invalid_argument(format!(
                    "placement of {task} names {} victims; the most is {PLACEMENT_PREEMPT_MAX}",
                    p.preempt.len()
                )));
            }
            let preempt = p
                .preempt
                .into_iter()
                .map(|v| task_ref(Some(v), "placement.preempt"))
                .collect::<Result<_, _>>()?;
            Ok(PlannedPlacement {
                task,
                incarnation,
                machine,
                machine_version: p.machine_version,
                preempt,
            })
        })
        .collect()
}

pub fn machine_reports(diffs: Vec<v1::MachineDiff>) -> Result<Vec<MachineReport>, Status> {
    if diffs.len() > FORWARD_DIFFS_MAX {
        return Err(Status::invalid_argument(format!(
            "{} machine diffs in one call; the most is {FORWARD_DIFFS_MAX}",
            diffs.len()
        )));
    }
    diffs
        .into_iter()
        .map(|diff| {
            let machine = name("machine name", &diff.machine)?;
            if diff.changed.len() > DIFF_TASKS_MAX {
                return Err(Status::invalid_argument(format!(
                    "diff of machine {machine} has {} task reports; the most is {DIFF_TASKS_MAX}",
                    diff.changed.len()
                )));
            }
            let tasks = diff
                .changed
                .into_iter()
                .map(task_report)
                .collect::<Result<_, _>>()?;
            Ok(MachineReport {
                machine,
                unreachable: diff.unreachable,
                tasks,
                usage: resources_or_zero(diff.usage),
            })
        })
        .collect()
}

fn task_report(report: v1::TaskReport) -> Result<TaskReport, Status> {
    name("job name", &report.job)?;
    let state = task_state_from_wire(report.state).map_err(|e| {
        Status::invalid_argument(format!("task {}/{}: {e}", report.job, report.index))
    })?;
    let ports = report
        .ports
        .into_iter()
        .map(|(name, port)| {
            u16::try_from(port).map(|port| (name, port)).map_err(|_| {
                Status::invalid_argument(format!(
                    "task {}/{}: port {port} is not a TCP port",
                    report.job, report.index
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(TaskReport {
        task: TaskId::new(report.job, report.index),
        incarnation: report.incarnation,
        state,
        exit_code: report.exit_code,
        restarts: report.restarts,
        pid: report.pid,
        usage: resources_or_zero(report.usage),
        ports,
        message: report.message,
    })
}

/// A band that takes a quota, by name.
pub fn quota_band(name: &str) -> Result<Band, Status> {
    match Band::from_name(name) {
        Some(band) if band.needs_quota() => Ok(band),
        Some(_) => Err(Status::invalid_argument(
            "the free band needs no quota: every user may use priorities 0-99",
        )),
        None => Err(Status::invalid_argument(format!(
            "band {name:?} is unknown: use batch, production or monitoring"
        ))),
    }
}

pub fn quota_to_wire(quota: QuotaUsage) -> v1::Quota {
    v1::Quota {
        user: quota.user,
        band: quota.band.name().to_owned(),
        limit: Some(quota.limit.into()),
        used: Some(quota.used.into()),
    }
}

/// The status a refused entry answers with.
pub fn state_error_status(error: &StateError) -> Status {
    let message = error.to_string();
    match error {
        StateError::JobNotFound { .. } | StateError::TokenNotFound { .. } => {
            Status::not_found(message)
        }
        StateError::TokenIdAmbiguous { .. } => Status::invalid_argument(message),
        StateError::JobAlreadyExists { .. } => Status::already_exists(message),
        StateError::CheckIndexMismatch { .. } => Status::failed_precondition(message),
        StateError::InvalidJob { .. }
        | StateError::InvalidMachine { .. }
        | StateError::InvalidRequest { .. }
        | StateError::BatchTooLarge { .. } => Status::invalid_argument(message),
        StateError::CellFull { .. } | StateError::QuotaExceeded { .. } => {
            Status::resource_exhausted(message)
        }
        StateError::PermissionDenied { .. } | StateError::NoQuota { .. } => {
            Status::permission_denied(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn bad_input_is_invalid_argument() {
        assert_eq!(job_spec(None).unwrap_err().code(), Code::InvalidArgument);
        let no_task = v1::JobSpec {
            name: "x".into(),
            owner: "me".into(),
            ..Default::default()
        };
        assert_eq!(
            job_spec(Some(no_task)).unwrap_err().code(),
            Code::InvalidArgument
        );
        let report = v1::TaskReport {
            job: "x".into(),
            state: 99,
            ..Default::default()
        };
        let diff = v1::MachineDiff {
            machine: "m1".into(),
            changed: vec![report],
            ..Default::default()
        };
        let error = machine_reports(vec![diff]).unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(
            error.message().contains("task.state"),
            "{}",
            error.message()
        );
        assert_eq!(
            placements(vec![v1::Placement::default()])
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        assert_eq!(
            machine_info(Some(v1::MachineInfo {
                name: "m1".into(),
                ..Default::default()
            }))
            .unwrap_err()
            .code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn state_errors_map_to_fitting_codes() {
        let e = StateError::CheckIndexMismatch {
            name: "j".into(),
            expected: 1,
            actual: 2,
        };
        assert_eq!(state_error_status(&e).code(), Code::FailedPrecondition);
        let e = StateError::JobNotFound { name: "j".into() };
        assert_eq!(state_error_status(&e).code(), Code::NotFound);
    }
}
