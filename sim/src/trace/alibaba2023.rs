//! Reader of Alibaba cluster-trace-gpu-v2023 ("openb"): a node list
//! (`sn, cpu_milli, memory_mib, gpu, model`) and a pod list (`name, cpu_milli, memory_mib,
//! num_gpu, gpu_milli, gpu_spec, qos, ...`), CSV with a header row. Columns are found by
//! their header name, so any file of that format (other samples, extra columns) reads.
//!
//! # Units
//!
//! CPU is in millicores and memory in MiB, as in the trace. The GPU dimension
//! (`Resources::gpus`) counts **thousandths of a GPU**: a node with 8 GPUs has 8000, a
//! GPU-sharing pod (`num_gpu == 1`, `gpu_milli < 1000`) asks for `gpu_milli`, a multi-GPU
//! pod for `num_gpu × 1000`. The scheduler then treats a node's GPUs as one pool, so it may
//! split one sharing pod's share across two GPUs: an optimistic model of fragmentation, which
//! the lower bound shares. Nodes and pods have no disk.
//!
//! # Priorities and constraints
//!
//! QoS maps onto the bands: LS and Guaranteed are production (200), Burstable batch (100),
//! BE free (0); LS is latency-sensitive, the rest batch. `gpu_spec` (`V100M16|V100M32`;
//! empty or `nan` for none) becomes a hard constraint `gpu_model in [...]` on the node
//! attribute `gpu_model`. Pods are all pending, in list order (the trace's timestamps do not
//! describe one moment).

use crate::trace::lines::{self, Fields, Lines};
use crate::trace::{TraceError, TraceTask, Workload};
use borg_model::{AppClass, Constraint, ConstraintOp, MachineInfo, Resources, TaskId, TaskState};
use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::Path;

/// Node attribute holding the GPU model (`V100M32`, `T4`, `G2`, ...).
pub const GPU_MODEL_ATTRIBUTE: &str = "gpu_model";
/// GPU thousandths per whole GPU.
pub const GPU_MILLI_PER_GPU: u32 = 1000;
/// Most GPUs a node or pod may have (the trace's largest is 8).
const GPUS_MAX: u64 = 1024;
/// Owner of every pod (the trace has no users).
pub const OWNER: &str = "alibaba";
const MIB: u64 = 1 << 20;

/// Default file names inside the trace's `csv/` folder.
pub const NODES_ALL_FILE: &str = "openb_node_list_all_node.csv";
pub const PODS_DEFAULT_FILE: &str = "openb_pod_list_default.csv";

/// Reads the nodes of `nodes` and the pods of `pods`.
pub fn load(nodes: &Path, pods: &Path) -> Result<Workload, TraceError> {
    let machines = read_nodes(lines::open(nodes)?, &nodes.display().to_string())?;
    let tasks = read_pods(lines::open(pods)?, &pods.display().to_string())?;
    Ok(Workload { machines, tasks })
}

/// Column positions of a CSV file, from its header row.
struct Header {
    columns: Vec<String>,
}

impl Header {
    fn read<R: BufRead>(lines: &mut Lines<R>) -> Result<(Header, u64), TraceError> {
        let file = lines.file().to_owned();
        let (line, text) = lines
            .next_line()?
            .ok_or(TraceError::MissingHeader { file })?;
        let columns = text.split(',').map(|c| c.trim().to_owned()).collect();
        Ok((Header { columns }, line))
    }

    fn index(&self, file: &str, line: u64, column: &'static str) -> Result<usize, TraceError> {
        self.columns
            .iter()
            .position(|c| c == column)
            .ok_or_else(|| TraceError::MissingColumn {
                file: file.to_owned(),
                line,
                column,
            })
    }
}

/// The row's name in column `index`: present, a valid name, and not seen before in the file.
fn unique_name<'a>(
    fields: &Fields<'a>,
    index: usize,
    field: &'static str,
    what: &'static str,
    seen: &mut HashSet<String>,
) -> Result<&'a str, TraceError> {
    let name = fields.raw(index);
    if name.is_empty() {
        return Err(fields.missing(field));
    }
    if !borg_model::is_valid_name(name) {
        return Err(fields.bad(field, name, "a name of letters, digits, '-', '_', '.'"));
    }
    if !seen.insert(name.to_owned()) {
        return Err(TraceError::Duplicate {
            file: fields.file.to_owned(),
            line: fields.line,
            what,
            name: name.to_owned(),
        });
    }
    Ok(name)
}

/// A GPU count no larger than [`GPUS_MAX`], in thousandths.
fn gpu_count_milli(fields: &Fields, index: usize, field: &'static str) -> Result<u32, TraceError> {
    let gpus = fields.u64_at_most(index, field, GPUS_MAX, "a GPU count from 0 to 1024")?;
    // At most 1024 × 1000: fits u32.
    Ok(u32::try_from(gpus).unwrap_or(u32::MAX) * GPU_MILLI_PER_GPU)
}

fn mib_to_bytes(fields: &Fields, index: usize, field: &'static str) -> Result<u64, TraceError> {
    let mib = fields.u64(index, field)?;
    mib.checked_mul(MIB)
        .ok_or_else(|| fields.bad(field, fields.raw(index), "a size in MiB below 2^44"))
}

/// `sn, cpu_milli, memory_mib, gpu, model` (with a header row).
pub fn read_nodes(reader: impl BufRead, file: &str) -> Result<Vec<MachineInfo>, TraceError> {
    let mut lines = Lines::new(reader, file);
    let (header, header_line) = Header::read(&mut lines)?;
    let sn = header.index(file, header_line, "sn")?;
    let cpu = header.index(file, header_line, "cpu_milli")?;
    let memory = header.index(file, header_line, "memory_mib")?;
    let gpu = header.index(file, header_line, "gpu")?;
    let model = header.index(file, header_line, "model")?;
    let mut seen = HashSet::new();
    let mut machines = Vec::new();
    while let Some((line, text)) = lines.next_line()? {
        let fields = Fields::split(file, line, text, header.columns.len())?;
        let name = unique_name(&fields, sn, "sn", "node", &mut seen)?;
        let mut attributes = BTreeMap::new();
        let gpu_model = fields.raw(model);
        if !gpu_model.is_empty() && gpu_model != "nan" {
            attributes.insert(GPU_MODEL_ATTRIBUTE.to_owned(), gpu_model.to_owned());
        }
        machines.push(MachineInfo {
            name: name.to_owned(),
            address: String::new(),
            capacity: Resources {
                cpu_millis: fields.u64(cpu, "cpu_milli")?,
                ram_bytes: mib_to_bytes(&fields, memory, "memory_mib")?,
                disk_bytes: 0,
                gpus: gpu_count_milli(&fields, gpu, "gpu")?,
            },
            attributes,
            port_capacity: None,
        });
    }
    Ok(machines)
}

/// Band and scheduling class of a QoS value: (priority, class code, app class).
fn map_qos(qos: &str) -> Option<(u32, u8, AppClass)> {
    Some(match qos {
        "LS" => (200, 3, AppClass::LatencySensitive),
        "Guaranteed" => (200, 2, AppClass::Batch),
        "Burstable" => (100, 1, AppClass::Batch),
        "BE" => (0, 0, AppClass::Batch),
        _ => return None,
    })
}

/// `name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, qos, ...` (with a header
/// row). Every pod is returned pending.
pub fn read_pods(reader: impl BufRead, file: &str) -> Result<Vec<TraceTask>, TraceError> {
    let mut lines = Lines::new(reader, file);
    let (header, header_line) = Header::read(&mut lines)?;
    let name_at = header.index(file, header_line, "name")?;
    let cpu = header.index(file, header_line, "cpu_milli")?;
    let memory = header.index(file, header_line, "memory_mib")?;
    let num_gpu = header.index(file, header_line, "num_gpu")?;
    let gpu_milli = header.index(file, header_line, "gpu_milli")?;
    let gpu_spec = header.index(file, header_line, "gpu_spec")?;
    let qos_at = header.index(file, header_line, "qos")?;
    let mut seen = HashSet::new();
    let mut tasks = Vec::new();
    while let Some((line, text)) = lines.next_line()? {
        let fields = Fields::split(file, line, text, header.columns.len())?;
        let name = unique_name(&fields, name_at, "name", "pod", &mut seen)?;
        let qos = fields.raw(qos_at);
        let (priority, class, app_class) = map_qos(qos)
            .ok_or_else(|| fields.bad("qos", qos, "LS, Guaranteed, Burstable or BE"))?;
        let gpus = pod_gpus(&fields, num_gpu, gpu_milli)?;
        let spec = fields.raw(gpu_spec);
        let constraints = if spec.is_empty() || spec == "nan" {
            Vec::new()
        } else {
            vec![Constraint {
                attribute: GPU_MODEL_ATTRIBUTE.to_owned(),
                op: ConstraintOp::In,
                values: spec.split('|').map(str::to_owned).collect(),
                soft: false,
            }]
        };
        tasks.push(TraceTask {
            id: TaskId::new(name, 0),
            owner: OWNER.to_owned(),
            priority,
            trace_priority: u32::from(class),
            scheduling_class: class,
            app_class,
            request: Resources {
                cpu_millis: fields.u64(cpu, "cpu_milli")?,
                ram_bytes: mib_to_bytes(&fields, memory, "memory_mib")?,
                disk_bytes: 0,
                gpus,
            },
            different_machines: false,
            constraints,
            state: TaskState::Pending,
            machine: None,
        });
    }
    Ok(tasks)
}

/// A pod's GPU demand in thousandths: `gpu_milli` of one GPU when sharing, whole GPUs
/// otherwise.
fn pod_gpus(fields: &Fields, num_gpu: usize, gpu_milli: usize) -> Result<u32, TraceError> {
    let whole = gpu_count_milli(fields, num_gpu, "num_gpu")?;
    let share = fields.u64_at_most(
        gpu_milli,
        "gpu_milli",
        u64::from(GPU_MILLI_PER_GPU),
        "thousandths of a GPU from 0 to 1000",
    )?;
    match whole {
        0 => Ok(0),
        GPU_MILLI_PER_GPU => {
            if share == 0 {
                return Err(fields.bad(
                    "gpu_milli",
                    fields.raw(gpu_milli),
                    "1 to 1000 thousandths for a pod with one GPU",
                ));
            }
            // share ≤ 1000 by the check above.
            Ok(u32::try_from(share).unwrap_or(GPU_MILLI_PER_GPU))
        }
        _ => Ok(whole),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
sn,cpu_milli,memory_mib,gpu,model
n0,32000,262144,0,
n1,96000,393216,8,G2
";

    const PODS: &str = "\
name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
p0,12000,16384,1,460,,LS,Running,0,1,0
p1,88000,327680,8,1000,nan,Burstable,Succeeded,1,2,1
p2,4000,1024,0,0,V100M16|V100M32,BE,Pending,2,3,
p3,1000,1024,0,0,,Guaranteed,Running,3,4,3
";

    #[test]
    fn nodes_and_pods_are_read() {
        let machines = read_nodes(NODES.as_bytes(), "nodes.csv").unwrap();
        assert_eq!(machines.len(), 2);
        assert_eq!(machines[1].capacity.cpu_millis, 96_000);
        assert_eq!(machines[1].capacity.ram_bytes, 393_216 << 20);
        assert_eq!(machines[1].capacity.gpus, 8_000);
        assert_eq!(
            machines[1]
                .attributes
                .get(GPU_MODEL_ATTRIBUTE)
                .map(String::as_str),
            Some("G2")
        );
        assert!(machines[0].attributes.is_empty());

        let pods = read_pods(PODS.as_bytes(), "pods.csv").unwrap();
        assert_eq!(pods.len(), 4);
        assert_eq!(pods[0].request.gpus, 460);
        assert_eq!(pods[0].priority, 200);
        assert_eq!(pods[0].app_class, AppClass::LatencySensitive);
        assert_eq!(pods[1].request.gpus, 8_000);
        assert_eq!(pods[1].priority, 100);
        assert!(pods[1].constraints.is_empty());
        assert_eq!(pods[2].priority, 0);
        assert_eq!(pods[2].constraints.len(), 1);
        assert_eq!(pods[2].constraints[0].values, vec!["V100M16", "V100M32"]);
        assert_eq!(pods[3].priority, 200);
        assert!(pods.iter().all(|p| p.state == TaskState::Pending));
    }

    #[test]
    fn columns_are_found_by_name() {
        let nodes = "model,gpu,extra,memory_mib,cpu_milli,sn\nT4,2,x,1024,8000,a\n";
        let machines = read_nodes(nodes.as_bytes(), "n.csv").unwrap();
        assert_eq!(machines[0].name, "a");
        assert_eq!(machines[0].capacity.gpus, 2_000);
    }

    fn pod_error(row: &str) -> TraceError {
        let header = PODS.lines().next().unwrap();
        read_pods(format!("{header}\n{row}\n").as_bytes(), "pods.csv").unwrap_err()
    }

    #[test]
    fn malformed_input_names_the_line_and_field() {
        let error = read_nodes(&b"sn,cpu_milli,memory_mib,gpu\n"[..], "n.csv").unwrap_err();
        assert!(
            matches!(
                error,
                TraceError::MissingColumn {
                    line: 1,
                    column: "model",
                    ..
                }
            ),
            "{error}"
        );
        let error = read_nodes(&b""[..], "n.csv").unwrap_err();
        assert!(matches!(error, TraceError::MissingHeader { .. }), "{error}");
        let error = read_nodes(format!("{NODES}n2,1x,1,0,\n").as_bytes(), "n.csv").unwrap_err();
        assert!(
            matches!(
                error,
                TraceError::BadField {
                    line: 4,
                    field: "cpu_milli",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().starts_with("n.csv:4:"), "{error}");
        let error = read_nodes(format!("{NODES}n1,1,1,0,\n").as_bytes(), "n.csv").unwrap_err();
        assert!(
            matches!(error, TraceError::Duplicate { line: 4, .. }),
            "{error}"
        );

        let error = pod_error("p9,1000,1024,0,0,,LS,Running,0,1");
        assert!(
            matches!(
                error,
                TraceError::FieldCount {
                    line: 2,
                    expected: 11,
                    found: 10,
                    ..
                }
            ),
            "{error}"
        );
        let error = pod_error("p9,1000,1024,0,0,,XX,Running,0,1,0");
        assert!(
            matches!(error, TraceError::BadField { field: "qos", .. }),
            "{error}"
        );
        let error = pod_error("p9,1000,1024,1,1500,,LS,Running,0,1,0");
        assert!(
            matches!(
                error,
                TraceError::BadField {
                    field: "gpu_milli",
                    ..
                }
            ),
            "{error}"
        );
        let error = pod_error("p9,1000,1024,1,0,,LS,Running,0,1,0");
        assert!(
            matches!(
                error,
                TraceError::BadField {
                    field: "gpu_milli",
                    ..
                }
            ),
            "{error}"
        );
        let error = pod_error("p9,1000,,0,0,,LS,Running,0,1,0");
        assert!(
            matches!(
                error,
                TraceError::MissingField {
                    field: "memory_mib",
                    ..
                }
            ),
            "{error}"
        );
        let error = pod_error("../p,1000,1,0,0,,LS,Running,0,1,0");
        assert!(
            matches!(error, TraceError::BadField { field: "name", .. }),
            "{error}"
        );
    }
}
