//! Reader of the Google ClusterData2011 trace (schema v2.1): the machines of the cell and the
//! tasks alive at a chosen time, replayed from `machine_events`, `job_events` and
//! `task_events` (gzip-compressed CSV without a header row, in time order).
//!
//! # Units
//!
//! The trace normalises CPU and memory so that the largest machine has 1.0 of each. This
//! reader scales them with [`Google2011Scale`]; the default makes the largest machine
//! 32 cores and 256 GiB (so the common 0.5/0.25 machine is 16 cores and 64 GiB, plausible for
//! 2011). `machine_events` has no disk column: every machine gets one full unit of disk
//! (4 TiB by default), so disk, whose requests are tiny, never decides a placement.
//!
//! # Priorities
//!
//! Trace priorities 0–11 map onto this project's bands: 0–1 free (0, 50), 2–8 batch
//! (100 + 15·(p−2), so 100…190), 9–10 production (200, 250), 11 monitoring (300). Scheduling
//! classes 2–3 are latency-sensitive, 0–1 batch.
//!
//! # Replay
//!
//! Events stamped at or before `at_us` are applied in order (time 0 describes what existed
//! before the trace window, which opens at [`TRACE_WINDOW_START_US`]); reading a table stops
//! at its first later event. A task is alive when its last state event is SUBMIT (pending)
//! or SCHEDULE (running on the event's machine). Requests, priority, class and the
//! different-machines flag come from the task's latest event that carries them (a SUBMIT
//! event at time 0 often has none). Alive tasks whose job has ended are dropped, as are
//! tasks no event gave a CPU and memory request; running tasks on a machine that is not up
//! are returned pending. [`Google2011Stats`] counts each case.

use crate::trace::lines::{self, Fields, Lines};
use crate::trace::{TraceError, TraceTask, Workload};
use borg_model::{AppClass, MachineInfo, Priority, Resources, TaskId, TaskState};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

/// The official trace window opens 600 s after the trace's time 0.
pub const TRACE_WINDOW_START_US: u64 = 600_000_000;

/// Most machines, jobs or tasks tracked by default (the whole 2011 cell has ~12.5k machines,
/// ~670k jobs and ~25M tasks over a month; one slice holds far fewer).
pub const TRACKED_MAX_DEFAULT: usize = 30_000_000;

const MACHINE_EVENTS: &str = "machine_events";
const JOB_EVENTS: &str = "job_events";
const TASK_EVENTS: &str = "task_events";

/// Highest trace priority and scheduling class of the schema.
const TRACE_PRIORITY_MAX: u64 = 11;
const SCHEDULING_CLASS_MAX: u64 = 3;

/// What one normalised unit (the largest machine) is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Google2011Scale {
    pub cpu_millis_per_unit: u64,
    pub ram_bytes_per_unit: u64,
    pub disk_bytes_per_unit: u64,
}

impl Default for Google2011Scale {
    fn default() -> Self {
        Google2011Scale {
            cpu_millis_per_unit: 32_000,
            ram_bytes_per_unit: 256 << 30,
            disk_bytes_per_unit: 4 << 40,
        }
    }
}

impl Google2011Scale {
    fn scale(fraction: f64, per_unit: u64) -> u64 {
        // Fractions are checked finite and non-negative; `as` saturates on the rare overflow.
        (fraction * per_unit as f64).round() as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Google2011Options {
    /// Replay events up to and including this trace time.
    pub at_us: u64,
    pub scale: Google2011Scale,
    /// Most machines, jobs or tasks tracked during the replay: a bound on memory.
    pub tracked_max: usize,
}

impl Google2011Options {
    pub fn new(at_us: u64) -> Self {
        Google2011Options {
            at_us,
            scale: Google2011Scale::default(),
            tracked_max: TRACKED_MAX_DEFAULT,
        }
    }
}

/// What the replay skipped or adjusted, so a user can judge the slice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Google2011Stats {
    pub machine_events: u64,
    pub job_events: u64,
    pub task_events: u64,
    /// Machines up at `at_us` whose capacity the trace never gave: left out.
    pub machines_without_capacity: u64,
    /// Alive tasks with no CPU or memory request in any event: left out.
    pub tasks_without_request: u64,
    /// Alive tasks whose job has a terminal job event: left out.
    pub tasks_of_ended_jobs: u64,
    /// Alive tasks with no job event at all: kept, owner from the task events.
    pub tasks_without_job_event: u64,
    /// Running tasks on machines that are not up: returned pending.
    pub tasks_on_missing_machines: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Google2011Trace {
    pub workload: Workload,
    pub stats: Google2011Stats,
}

/// Reads the trace in `dir` (with `machine_events/`, `job_events/`, `task_events/`).
pub fn load(dir: &Path, options: &Google2011Options) -> Result<Google2011Trace, TraceError> {
    let mut replay = Google2011Replay::new(*options);
    for part in lines::table_parts(dir, MACHINE_EVENTS)? {
        replay.read_machine_events(lines::open(&part)?, &part.display().to_string())?;
    }
    for part in lines::table_parts(dir, JOB_EVENTS)? {
        replay.read_job_events(lines::open(&part)?, &part.display().to_string())?;
    }
    for part in lines::table_parts(dir, TASK_EVENTS)? {
        replay.read_task_events(lines::open(&part)?, &part.display().to_string())?;
    }
    Ok(replay.finish())
}

/// Maps a trace priority (0–11) onto this project's bands (see the module documentation).
pub fn map_priority(trace_priority: u32) -> Priority {
    match trace_priority {
        0 => 0,
        1 => 50,
        2..=8 => 100 + 15 * (trace_priority - 2),
        9 => 200,
        10 => 250,
        _ => 300,
    }
}

/// Scheduling classes 2 and 3 are latency-sensitive.
pub fn map_scheduling_class(class: u8) -> AppClass {
    if class >= 2 {
        AppClass::LatencySensitive
    } else {
        AppClass::Batch
    }
}

/// A trace user or other hash (base64) as a valid owner name: `+`→`-`, `/`→`_`, no `=`.
pub fn sanitize_name(hash: &str) -> String {
    let name: String = hash
        .chars()
        .filter(|&c| c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' => c,
            _ => '_',
        })
        .take(borg_model::JOB_NAME_MAX_LEN)
        .collect();
    match name.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None if name.is_empty() => "unknown".to_owned(),
        None => name,
    }
}

/// Machine name of a trace machine id.
pub fn machine_name(machine_id: u64) -> String {
    format!("machine-{machine_id}")
}

/// Job name of a trace job id.
pub fn job_name(job_id: u64) -> String {
    format!("job-{job_id}")
}

#[derive(Debug, Clone)]
struct MachineRecord {
    up: bool,
    platform: String,
    cpu: Option<f64>,
    memory: Option<f64>,
}

#[derive(Debug, Clone)]
struct JobRecord {
    ended: bool,
    user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    Pending,
    Running { machine_id: u64 },
    Dead,
}

#[derive(Debug, Clone)]
struct TaskRecord {
    liveness: Liveness,
    user: String,
    priority: u32,
    scheduling_class: u8,
    cpu: Option<f64>,
    memory: Option<f64>,
    disk: Option<f64>,
    different_machines: bool,
}

/// Where a table's replay stands: the previous event time, to check the order across parts,
/// and whether an event past `at_us` ended it.
#[derive(Debug, Clone, Copy, Default)]
struct TableCursor {
    previous_us: u64,
    done: bool,
}

impl TableCursor {
    /// Checks the order of `time_us`; false once the event lies past `at_us`.
    fn admit(&mut self, fields: &Fields, time_us: u64, at_us: u64) -> Result<bool, TraceError> {
        if time_us < self.previous_us {
            return Err(TraceError::OutOfOrder {
                file: fields.file.to_owned(),
                line: fields.line,
                time_us,
                previous_us: self.previous_us,
            });
        }
        self.previous_us = time_us;
        if time_us > at_us {
            self.done = true;
            return Ok(false);
        }
        Ok(true)
    }
}

/// An incremental replay: feed each table's parts in time order (machines, jobs, tasks in
/// any order of tables), then [`finish`](Google2011Replay::finish).
pub struct Google2011Replay {
    options: Google2011Options,
    machines: BTreeMap<u64, MachineRecord>,
    jobs: HashMap<u64, JobRecord>,
    tasks: BTreeMap<(u64, u32), TaskRecord>,
    machine_cursor: TableCursor,
    job_cursor: TableCursor,
    task_cursor: TableCursor,
    stats: Google2011Stats,
}

impl Google2011Replay {
    pub fn new(options: Google2011Options) -> Self {
        Google2011Replay {
            options,
            machines: BTreeMap::new(),
            jobs: HashMap::new(),
            tasks: BTreeMap::new(),
            machine_cursor: TableCursor::default(),
            job_cursor: TableCursor::default(),
            task_cursor: TableCursor::default(),
            stats: Google2011Stats::default(),
        }
    }

    fn too_many(&self, fields: &Fields, what: &'static str) -> TraceError {
        TraceError::TooMany {
            file: fields.file.to_owned(),
            line: fields.line,
            what,
            max: self.options.tracked_max,
        }
    }

    /// `time, machine_id, event_type, platform_id, cpu_capacity, memory_capacity`
    pub fn read_machine_events(
        &mut self,
        reader: impl BufRead,
        file: &str,
    ) -> Result<(), TraceError> {
        let mut lines = Lines::new(reader, file);
        while !self.machine_cursor.done {
            let Some((line, text)) = lines.next_line()? else {
                break;
            };
            let fields = Fields::split(file, line, text, 6)?;
            let time_us = fields.u64(0, "time")?;
            if !self
                .machine_cursor
                .admit(&fields, time_us, self.options.at_us)?
            {
                break;
            }
            let machine_id = fields.u64(1, "machine_id")?;
            let event =
                fields.u64_at_most(2, "event_type", 2, "0 (ADD), 1 (REMOVE) or 2 (UPDATE)")?;
            let platform = fields.raw(3);
            let cpu = fields.opt_fraction(4, "cpu_capacity")?;
            let memory = fields.opt_fraction(5, "memory_capacity")?;
            self.stats.machine_events += 1;
            if !self.machines.contains_key(&machine_id)
                && self.machines.len() >= self.options.tracked_max
            {
                return Err(self.too_many(&fields, "machines"));
            }
            let record = self
                .machines
                .entry(machine_id)
                .or_insert_with(|| MachineRecord {
                    up: false,
                    platform: String::new(),
                    cpu: None,
                    memory: None,
                });
            match event {
                0 | 2 => {
                    // ADD brings the machine up; UPDATE changes what it has. Missing values
                    // keep what an earlier event said.
                    if event == 0 {
                        record.up = true;
                    }
                    if !platform.is_empty() {
                        platform.clone_into(&mut record.platform);
                    }
                    record.cpu = cpu.or(record.cpu);
                    record.memory = memory.or(record.memory);
                }
                _ => record.up = false,
            }
        }
        Ok(())
    }

    /// `time, missing_info, job_id, event_type, user, scheduling_class, job_name,
    /// logical_job_name`
    pub fn read_job_events(&mut self, reader: impl BufRead, file: &str) -> Result<(), TraceError> {
        let mut lines = Lines::new(reader, file);
        while !self.job_cursor.done {
            let Some((line, text)) = lines.next_line()? else {
                break;
            };
            let fields = Fields::split(file, line, text, 8)?;
            let time_us = fields.u64(0, "time")?;
            if !self
                .job_cursor
                .admit(&fields, time_us, self.options.at_us)?
            {
                break;
            }
            let job_id = fields.u64(2, "job_id")?;
            let event = event_type(&fields, 3)?;
            let user = fields.raw(4);
            self.stats.job_events += 1;
            if !self.jobs.contains_key(&job_id) && self.jobs.len() >= self.options.tracked_max {
                return Err(self.too_many(&fields, "jobs"));
            }
            let record = self.jobs.entry(job_id).or_insert_with(|| JobRecord {
                ended: false,
                user: String::new(),
            });
            if !user.is_empty() {
                user.clone_into(&mut record.user);
            }
            record.ended = matches!(event, EventType::Ended);
        }
        Ok(())
    }

    /// `time, missing_info, job_id, task_index, machine_id, event_type, user,
    /// scheduling_class, priority, cpu_request, memory_request, disk_request,
    /// different_machines_restriction`
    pub fn read_task_events(&mut self, reader: impl BufRead, file: &str) -> Result<(), TraceError> {
        let mut lines = Lines::new(reader, file);
        while !self.task_cursor.done {
            let Some((line, text)) = lines.next_line()? else {
                break;
            };
            let fields = Fields::split(file, line, text, 13)?;
            let time_us = fields.u64(0, "time")?;
            if !self
                .task_cursor
                .admit(&fields, time_us, self.options.at_us)?
            {
                break;
            }
            let job_id = fields.u64(2, "job_id")?;
            let task_index = u32::try_from(fields.u64(3, "task_index")?)
                .map_err(|_| fields.bad("task_index", fields.raw(3), "a task index below 2^32"))?;
            let machine_id = fields.opt_u64(4, "machine_id")?;
            let event = event_type(&fields, 5)?;
            let user = fields.raw(6);
            let scheduling_class = fields.u64_at_most(
                7,
                "scheduling_class",
                SCHEDULING_CLASS_MAX,
                "a scheduling class from 0 to 3",
            )?;
            let priority =
                fields.u64_at_most(8, "priority", TRACE_PRIORITY_MAX, "a priority from 0 to 11")?;
            let cpu = fields.opt_fraction(9, "cpu_request")?;
            let memory = fields.opt_fraction(10, "memory_request")?;
            let disk = fields.opt_fraction(11, "disk_request")?;
            let different_machines = match fields.raw(12) {
                "" => None,
                "0" => Some(false),
                "1" => Some(true),
                other => return Err(fields.bad("different_machines_restriction", other, "0 or 1")),
            };
            let liveness = match event {
                EventType::Submit => Some(Liveness::Pending),
                EventType::Schedule => Some(Liveness::Running {
                    machine_id: machine_id.ok_or_else(|| fields.missing("machine_id"))?,
                }),
                EventType::Ended => Some(Liveness::Dead),
                EventType::Update => None,
            };
            self.stats.task_events += 1;
            let key = (job_id, task_index);
            if !self.tasks.contains_key(&key) && self.tasks.len() >= self.options.tracked_max {
                return Err(self.too_many(&fields, "tasks"));
            }
            let record = self.tasks.entry(key).or_insert_with(|| TaskRecord {
                liveness: Liveness::Dead,
                user: String::new(),
                priority: 0,
                scheduling_class: 0,
                cpu: None,
                memory: None,
                disk: None,
                different_machines: false,
            });
            if let Some(liveness) = liveness {
                record.liveness = liveness;
            }
            if !user.is_empty() {
                user.clone_into(&mut record.user);
            }
            // Both are at most 11 and 3, checked above.
            record.priority = u32::try_from(priority).unwrap_or(u32::MAX);
            record.scheduling_class = u8::try_from(scheduling_class).unwrap_or(u8::MAX);
            record.cpu = cpu.or(record.cpu);
            record.memory = memory.or(record.memory);
            record.disk = disk.or(record.disk);
            if let Some(different_machines) = different_machines {
                record.different_machines = different_machines;
            }
        }
        Ok(())
    }

    /// The machines up and the tasks alive at `at_us`, in id order.
    pub fn finish(self) -> Google2011Trace {
        let Google2011Replay {
            options,
            machines,
            jobs,
            tasks,
            mut stats,
            ..
        } = self;
        let scale = options.scale;
        let mut up = Vec::new();
        let mut up_ids = std::collections::HashSet::new();
        for (id, machine) in &machines {
            if !machine.up {
                continue;
            }
            let (Some(cpu), Some(memory)) = (machine.cpu, machine.memory) else {
                stats.machines_without_capacity += 1;
                continue;
            };
            up_ids.insert(*id);
            let mut attributes = BTreeMap::new();
            if !machine.platform.is_empty() {
                attributes.insert("platform".to_owned(), machine.platform.clone());
            }
            up.push(MachineInfo {
                name: machine_name(*id),
                address: String::new(),
                capacity: Resources {
                    cpu_millis: Google2011Scale::scale(cpu, scale.cpu_millis_per_unit),
                    ram_bytes: Google2011Scale::scale(memory, scale.ram_bytes_per_unit),
                    disk_bytes: scale.disk_bytes_per_unit,
                    gpus: 0,
                },
                attributes,
                port_capacity: None,
            });
        }
        let mut alive = Vec::new();
        for ((job_id, index), task) in tasks {
            if task.liveness == Liveness::Dead {
                continue;
            }
            let owner = match jobs.get(&job_id) {
                Some(job) if job.ended => {
                    stats.tasks_of_ended_jobs += 1;
                    continue;
                }
                Some(job) if !job.user.is_empty() => sanitize_name(&job.user),
                Some(_) => sanitize_name(&task.user),
                None => {
                    stats.tasks_without_job_event += 1;
                    sanitize_name(&task.user)
                }
            };
            let (Some(cpu), Some(memory)) = (task.cpu, task.memory) else {
                stats.tasks_without_request += 1;
                continue;
            };
            let machine = match task.liveness {
                Liveness::Running { machine_id } if up_ids.contains(&machine_id) => {
                    Some(machine_name(machine_id))
                }
                Liveness::Running { .. } => {
                    stats.tasks_on_missing_machines += 1;
                    None
                }
                _ => None,
            };
            alive.push(TraceTask {
                id: TaskId::new(job_name(job_id), index),
                owner,
                priority: map_priority(task.priority),
                trace_priority: task.priority,
                scheduling_class: task.scheduling_class,
                app_class: map_scheduling_class(task.scheduling_class),
                request: Resources {
                    cpu_millis: Google2011Scale::scale(cpu, scale.cpu_millis_per_unit),
                    ram_bytes: Google2011Scale::scale(memory, scale.ram_bytes_per_unit),
                    disk_bytes: Google2011Scale::scale(
                        task.disk.unwrap_or(0.0),
                        scale.disk_bytes_per_unit,
                    ),
                    gpus: 0,
                },
                different_machines: task.different_machines,
                constraints: Vec::new(),
                state: if machine.is_some() {
                    TaskState::Running
                } else {
                    TaskState::Pending
                },
                machine,
            });
        }
        Google2011Trace {
            workload: Workload {
                machines: up,
                tasks: alive,
            },
            stats,
        }
    }
}

/// Event types of jobs and tasks, grouped by their effect on liveness.
enum EventType {
    Submit,
    Schedule,
    /// EVICT, FAIL, FINISH, KILL, LOST.
    Ended,
    /// UPDATE_PENDING, UPDATE_RUNNING.
    Update,
}

fn event_type(fields: &Fields, index: usize) -> Result<EventType, TraceError> {
    let value = fields.u64_at_most(
        index,
        "event_type",
        8,
        "an event type from 0 (SUBMIT) to 8 (UPDATE_RUNNING)",
    )?;
    Ok(match value {
        0 => EventType::Submit,
        1 => EventType::Schedule,
        2..=6 => EventType::Ended,
        _ => EventType::Update,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn replay_of(machines: &str, jobs: &str, tasks: &str, at_us: u64) -> Google2011Trace {
        let mut replay = Google2011Replay::new(Google2011Options::new(at_us));
        replay
            .read_machine_events(machines.as_bytes(), "machine_events.csv")
            .unwrap();
        replay
            .read_job_events(jobs.as_bytes(), "job_events.csv")
            .unwrap();
        replay
            .read_task_events(tasks.as_bytes(), "task_events.csv")
            .unwrap();
        replay.finish()
    }

    const MACHINES: &str = "\
0,1,0,platA,0.5,0.25
0,2,0,platA,1,1
0,3,0,platB,,
100,2,1,platA,1,1
200,1,2,,0.5,0.5
";

    const JOBS: &str = "\
0,,10,0,user/a+b=,3,name,logical
0,,11,0,user2,1,name,logical
150,,11,5,user2,1,name,logical
";

    const TASKS: &str = "\
0,2,10,0,1,0,user/a+b=,3,9,,,,
0,,10,0,1,1,user/a+b=,3,9,0.125,0.0625,0.001,1
0,,10,1,,0,user/a+b=,3,9,0.25,0.125,,0
0,,11,0,2,1,user2,1,0,0.1,0.1,,
0,,12,0,,0,user3,0,2,,,,
50,,10,2,,0,user/a+b=,2,10,0.5,0.5,,0
60,,10,2,1,1,user/a+b=,2,10,,,,
70,,10,2,1,4,user/a+b=,2,10,,,,
";

    #[test]
    fn machines_are_replayed_and_scaled() {
        let trace = replay_of(MACHINES, "", "", 1_000);
        let machines = &trace.workload.machines;
        // Machine 2 was removed, machine 3 has no capacity.
        assert_eq!(machines.len(), 1);
        assert_eq!(machines[0].name, "machine-1");
        assert_eq!(machines[0].capacity.cpu_millis, 16_000);
        // The UPDATE at 200 doubled its memory: 0.5 of 256 GiB.
        assert_eq!(machines[0].capacity.ram_bytes, 128 << 30);
        assert_eq!(machines[0].capacity.disk_bytes, 4 << 40);
        assert_eq!(
            machines[0].attributes.get("platform").map(String::as_str),
            Some("platA")
        );
        assert_eq!(trace.stats.machines_without_capacity, 1);
        assert_eq!(trace.stats.machine_events, 5);

        // At time 150 the update has not happened and machine 2 is gone.
        let early = replay_of(MACHINES, "", "", 150);
        assert_eq!(early.workload.machines.len(), 1);
        assert_eq!(early.workload.machines[0].capacity.ram_bytes, 64 << 30);
        let earlier = replay_of(MACHINES, "", "", 99);
        assert_eq!(earlier.workload.machines.len(), 2);
        assert_eq!(earlier.stats.machine_events, 3);
    }

    #[test]
    fn tasks_alive_at_the_time_are_replayed() {
        let trace = replay_of(MACHINES, JOBS, TASKS, 1_000);
        let tasks = &trace.workload.tasks;
        let ids: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
        // job-10/2 finished at 70; job-11 was killed at 150; job-12/0 has no request.
        assert_eq!(ids, vec!["job-10/0", "job-10/1"]);
        let running = &tasks[0];
        assert_eq!(running.state, TaskState::Running);
        assert_eq!(running.machine.as_deref(), Some("machine-1"));
        assert_eq!(running.owner, "user_a-b");
        assert_eq!(running.trace_priority, 9);
        assert_eq!(running.priority, 200);
        assert_eq!(running.scheduling_class, 3);
        assert_eq!(running.app_class, AppClass::LatencySensitive);
        assert_eq!(running.request.cpu_millis, 4_000);
        assert_eq!(running.request.ram_bytes, 16 << 30);
        assert!(running.different_machines);
        let pending = &tasks[1];
        assert_eq!(pending.state, TaskState::Pending);
        assert_eq!(pending.machine, None);
        assert!(!pending.different_machines);
        assert_eq!(trace.stats.tasks_of_ended_jobs, 1);
        assert_eq!(trace.stats.tasks_without_request, 1);
        assert_eq!(trace.stats.tasks_without_job_event, 1);
        assert_eq!(trace.stats.task_events, 8);
    }

    #[test]
    fn the_replay_stops_at_the_chosen_time() {
        // At 60 job-10/2 runs on machine 1 with the request of its SUBMIT at 50, and job-11
        // (killed only at 150) still runs; its machine 2 is up until 100.
        let trace = replay_of(MACHINES, JOBS, TASKS, 60);
        let ids: Vec<String> = trace
            .workload
            .tasks
            .iter()
            .map(|t| t.id.to_string())
            .collect();
        assert_eq!(ids, vec!["job-10/0", "job-10/1", "job-10/2", "job-11/0"]);
        let t = &trace.workload.tasks[2];
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(t.trace_priority, 10);
        assert_eq!(t.priority, 250);
        assert_eq!(t.request.cpu_millis, 16_000);
        let on_2 = &trace.workload.tasks[3];
        assert_eq!(on_2.machine.as_deref(), Some("machine-2"));
        assert_eq!(on_2.priority, 0);
        assert_eq!(on_2.app_class, AppClass::Batch);

        // After machine 2 is removed (100) but before the job is killed (150), its task is
        // returned pending.
        let trace = replay_of(MACHINES, JOBS, TASKS, 120);
        let on_2 = trace
            .workload
            .tasks
            .iter()
            .find(|t| t.id.job == "job-11")
            .unwrap();
        assert_eq!(on_2.state, TaskState::Pending);
        assert_eq!(trace.stats.tasks_on_missing_machines, 1);
    }

    #[test]
    fn priorities_map_onto_the_bands() {
        use borg_model::Band;
        let bands: Vec<Band> = (0..=11).map(|p| Band::of(map_priority(p))).collect();
        assert_eq!(&bands[..2], &[Band::Free, Band::Free]);
        assert!(bands[2..=8].iter().all(|b| *b == Band::Batch));
        assert_eq!(
            &bands[9..],
            &[Band::Production, Band::Production, Band::Monitoring]
        );
        let batch: Vec<Priority> = (2..=8).map(map_priority).collect();
        assert!(batch.windows(2).all(|w| w[0] < w[1]), "{batch:?}");
    }

    #[test]
    fn names_are_made_valid() {
        assert!(borg_model::is_valid_name(&sanitize_name(
            "70s3v5qRyCO/1PCdI6f+w="
        )));
        assert_eq!(sanitize_name("a/b+c=="), "a_b-c");
        assert_eq!(sanitize_name(".x"), "_x");
        assert_eq!(sanitize_name("=="), "unknown");
    }

    fn task_error(text: &str) -> TraceError {
        let mut replay = Google2011Replay::new(Google2011Options::new(u64::MAX));
        replay
            .read_task_events(text.as_bytes(), "task_events.csv")
            .unwrap_err()
    }

    #[test]
    fn malformed_task_events_name_the_line_and_field() {
        let good = "0,,10,0,1,1,u,3,9,0.1,0.1,0.1,0\n";
        let error = task_error(&format!("{good}0,,10,1,1,1,u,3,9,0.1,0.1\n"));
        assert!(
            matches!(&error, TraceError::FieldCount { line: 2, expected: 13, found: 11, file } if file == "task_events.csv"),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("task_events.csv:2:"),
            "{error}"
        );
        let error = task_error(&format!("{good}{good}0,,10,1,1,1,u,3,12,0.1,0.1,0.1,0\n"));
        assert!(
            matches!(
                error,
                TraceError::BadField {
                    line: 3,
                    field: "priority",
                    ..
                }
            ),
            "{error}"
        );
        let error = task_error("0,,10,1,1,9,u,3,9,0.1,0.1,0.1,0\n");
        assert!(
            matches!(
                error,
                TraceError::BadField {
                    field: "event_type",
                    ..
                }
            ),
            "{error}"
        );
        let error = task_error("0,,10,1,,1,u,3,9,0.1,0.1,0.1,0\n");
        assert!(
            matches!(
                error,
                TraceError::MissingField {
                    field: "machine_id",
                    ..
                }
            ),
            "{error}"
        );
        let error = task_error("0,,,1,1,1,u,3,9,0.1,0.1,0.1,0\n");
        assert!(
            matches!(
                error,
                TraceError::MissingField {
                    field: "job_id",
                    ..
                }
            ),
            "{error}"
        );
        let error = task_error("0,,10,1,1,1,u,3,9,abc,0.1,0.1,0\n");
        assert!(
            matches!(
                error,
                TraceError::BadField {
                    field: "cpu_request",
                    ..
                }
            ),
            "{error}"
        );
        let error = task_error("0,,10,1,1,1,u,3,9,0.1,0.1,0.1,2\n");
        assert!(
            matches!(
                error,
                TraceError::BadField {
                    field: "different_machines_restriction",
                    ..
                }
            ),
            "{error}"
        );
        let error = task_error(&format!("5,,10,0,1,1,u,3,9,0.1,0.1,0.1,0\n{good}"));
        assert!(
            matches!(
                error,
                TraceError::OutOfOrder {
                    line: 2,
                    time_us: 0,
                    previous_us: 5,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn malformed_machine_and_job_events_name_the_line_and_field() {
        let mut replay = Google2011Replay::new(Google2011Options::new(u64::MAX));
        let error = replay
            .read_machine_events(&b"0,1,0,p,0.5,0.5\n0,2,3,p,0.5,0.5\n"[..], "m.csv")
            .unwrap_err();
        assert!(
            matches!(
                error,
                TraceError::BadField {
                    line: 2,
                    field: "event_type",
                    ..
                }
            ),
            "{error}"
        );
        let error = replay
            .read_machine_events(&b"0,1,0,p,-1,0.5\n"[..], "m.csv")
            .unwrap_err();
        assert!(
            matches!(
                error,
                TraceError::BadField {
                    field: "cpu_capacity",
                    ..
                }
            ),
            "{error}"
        );
        let error = replay
            .read_job_events(&b"0,,10,0,u,3,n\n"[..], "j.csv")
            .unwrap_err();
        assert!(
            matches!(
                error,
                TraceError::FieldCount {
                    line: 1,
                    expected: 8,
                    found: 7,
                    ..
                }
            ),
            "{error}"
        );
        let error = replay
            .read_job_events(&b"x,,10,0,u,3,n,l\n"[..], "j.csv")
            .unwrap_err();
        assert!(
            matches!(error, TraceError::BadField { field: "time", .. }),
            "{error}"
        );
    }

    #[test]
    fn order_is_checked_across_parts_of_a_table() {
        let mut replay = Google2011Replay::new(Google2011Options::new(u64::MAX));
        replay
            .read_job_events(&b"10,,1,0,u,3,n,l\n"[..], "part-0")
            .unwrap();
        let error = replay
            .read_job_events(&b"9,,2,0,u,3,n,l\n"[..], "part-1")
            .unwrap_err();
        assert!(
            matches!(&error, TraceError::OutOfOrder { file, line: 1, .. } if file == "part-1"),
            "{error}"
        );
    }

    #[test]
    fn the_tracking_bound_is_enforced() {
        let mut options = Google2011Options::new(u64::MAX);
        options.tracked_max = 1;
        let mut replay = Google2011Replay::new(options);
        let error = replay
            .read_task_events(
                &b"0,,10,0,1,1,u,3,9,0.1,0.1,0.1,0\n0,,10,0,1,4,u,3,9,0.1,0.1,0.1,0\n0,,10,1,1,1,u,3,9,0.1,0.1,0.1,0\n"[..],
                "t.csv",
            )
            .unwrap_err();
        assert!(
            matches!(
                error,
                TraceError::TooMany {
                    line: 3,
                    what: "tasks",
                    max: 1,
                    ..
                }
            ),
            "{error}"
        );
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn truncated_compressed_input_is_an_error() {
        let text: String = (0..2_000)
            .map(|i| format!("{i},,10,{i},1,1,u,3,9,0.1,0.1,0.1,0\n"))
            .collect();
        let whole = gzip(&text);
        let mut replay = Google2011Replay::new(Google2011Options::new(u64::MAX));
        replay
            .read_task_events(
                lines::gunzip(std::io::Cursor::new(whole.clone())),
                "t.csv.gz",
            )
            .unwrap();
        assert_eq!(replay.finish().workload.tasks.len(), 2_000);

        let cut = whole[..whole.len() / 2].to_vec();
        let mut replay = Google2011Replay::new(Google2011Options::new(u64::MAX));
        let error = replay
            .read_task_events(lines::gunzip(std::io::Cursor::new(cut)), "t.csv.gz")
            .unwrap_err();
        assert!(
            matches!(&error, TraceError::Truncated { file, line, .. } if file == "t.csv.gz" && *line > 1),
            "{error}"
        );
        assert!(error.to_string().contains("truncated"), "{error}");

        let mut corrupt = whole;
        let middle = corrupt.len() / 2;
        for byte in &mut corrupt[middle..middle + 64] {
            *byte ^= 0x5a;
        }
        let mut replay = Google2011Replay::new(Google2011Options::new(u64::MAX));
        let error = replay
            .read_task_events(lines::gunzip(std::io::Cursor::new(corrupt)), "t.csv.gz")
            .unwrap_err();
        assert!(
            matches!(
                error,
                TraceError::Read { .. }
                    | TraceError::Truncated { .. }
                    | TraceError::FieldCount { .. }
                    | TraceError::BadField { .. }
                    | TraceError::NotUtf8 { .. }
            ),
            "{error}"
        );
    }
}
