//! The job schema: evaluated `job` and `alloc` tuples to `JobSpec` and `AllocSpec`, with an
//! error for every field that is unknown, of the wrong type or out of range.

use crate::diag::{Error, Result, Span};
use crate::eval::Decl;
use crate::suggest::did_you_mean;
use crate::value::{merge, Field, Tuple, Unit, Value};
use crate::{AllocSpec, JobExtras, EVAL_STEPS_MAX};
use borg_model::{
    AllocSetSpec, AppClass, Constraint, ConstraintOp, JobSpec, JobType, Priority, Resources,
    RestartPolicy, TaskTemplate,
};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Fields a job tuple may set.
pub(crate) const JOB_FIELDS: [&str; 17] = [
    "owner",
    "priority",
    "replicas",
    "command",
    "binary",
    "args",
    "env",
    "resources",
    "requirements",
    "ports",
    "constraints",
    "appclass",
    "restart",
    "type",
    "runtime",
    "alloc",
    "tasks",
];
/// Fields that describe what one task runs: the ones a per-task override may change.
const TASK_FIELDS: [&str; 7] = [
    "command",
    "binary",
    "args",
    "env",
    "resources",
    "requirements",
    "ports",
];
const ALLOC_FIELDS: [&str; 7] = [
    "owner",
    "priority",
    "replicas",
    "resources",
    "requirements",
    "constraints",
    "runtime",
];
const RESOURCE_FIELDS: [&str; 4] = ["cpu", "ram", "disk", "gpu"];
const RESTART_FIELDS: [&str; 3] = ["max_attempts", "interval", "delay"];
const CONSTRAINT_FIELDS: [&str; 5] = ["attribute", "op", "value", "values", "soft"];
const RUNTIME_FIELDS: [&str; 1] = ["cell"];
/// Runtime substitutions the borglet fills in when a task starts.
pub const SUBSTITUTIONS: [&str; 5] = ["port", "task_index", "job", "user", "cell"];
/// Owner put in place of an unset one while validating (the CLI fills in the real user).
const OWNER_PLACEHOLDER: &str = "unset-owner";

/// Alias pairs: the second name is accepted for the first.
const ALIASES: [(&str, &str); 2] = [("command", "binary"), ("resources", "requirements")];

fn canonical(key: &str) -> &str {
    ALIASES
        .iter()
        .find(|(_, alias)| *alias == key)
        .map(|(c, _)| *c)
        .unwrap_or(key)
}

/// Collects errors so that one pass reports every bad field of every job.
pub(crate) struct Checker {
    pub errors: Vec<Error>,
    steps: u64,
}

impl Checker {
    pub fn new() -> Checker {
        Checker {
            errors: Vec::new(),
            steps: 0,
        }
    }

    /// Charges one step of conversion work (an item rendered); false once over budget, so
    /// that per-task overrides of huge lists cannot build gigabytes of output.
    fn charge(&mut self, span: Span) -> bool {
        if self.steps > EVAL_STEPS_MAX {
            return false;
        }
        match charge(&mut self.steps, span) {
            Ok(()) => true,
            Err(e) => {
                self.errors.push(e);
                false
            }
        }
    }

    fn ok<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// Unknown keys (with a hint) and both names of an alias pair set at once.
    fn check_keys(&mut self, t: &Tuple, known: &[&str], what: &str) {
        for f in &t.fields {
            if !known.contains(&&*f.key) {
                let mut err =
                    Error::new(f.key_span, format!("unknown field `{}` in {what}", f.key));
                err = match did_you_mean(&f.key, known.iter().copied()) {
                    Some(h) => err.hint(h),
                    None if &*f.key == "name" && what.starts_with("job") => {
                        err.hint("a job's name comes from `job NAME = ...`")
                    }
                    None => err.hint(format!("the fields are: {}", known.join(", "))),
                };
                self.errors.push(err);
            }
        }
        for (c, alias) in ALIASES {
            if let (Some(_), Some(a)) = (t.get(c), t.get(alias)) {
                if known.contains(&c) {
                    self.errors.push(
                        Error::new(
                            a.key_span,
                            format!("`{alias}` and `{c}` are the same field; set only one"),
                        )
                        .hint(format!("remove `{alias}` or `{c}`")),
                    );
                }
            }
        }
    }

    /// The tuple a `job` or `alloc` declaration must be, or an error saying it is not.
    fn declared_tuple<'d>(&mut self, decl: &'d Decl, kind: &str) -> Option<&'d Tuple> {
        match &decl.value {
            Value::Tuple(t) => Some(t),
            other => {
                self.errors.push(Error::new(
                    decl.value_span,
                    format!(
                        "{kind} `{}` must be a tuple `{{ ... }}`, but this is {}",
                        decl.name,
                        other.describe()
                    ),
                ));
                None
            }
        }
    }

    pub fn job(&mut self, decl: &Decl) -> Option<(JobSpec, JobExtras)> {
        let errors_before = self.errors.len();
        let t = self.declared_tuple(decl, "job")?;
        self.check_keys(t, &JOB_FIELDS, &format!("job `{}`", decl.name));
        let mut spec = JobSpec {
            name: decl.name.to_string(),
            replicas: 1,
            ..JobSpec::default()
        };
        let mut extras = JobExtras::default();
        spec.task = self.task_template(t);
        for f in &t.fields {
            match &*f.key {
                "owner" => {
                    if let Some(v) = self.ok(want_string(f)) {
                        spec.owner = v;
                    }
                }
                "priority" => {
                    if let Some(v) = self.ok(want_priority(f)) {
                        spec.priority = v;
                    }
                }
                "replicas" => {
                    if let Some(v) = self.ok(want_u32(f, "replicas = 3")) {
                        spec.replicas = v;
                    }
                }
                "constraints" => spec.constraints = self.constraints(f),
                "appclass" => {
                    let v = self.ok(want_choice(f, &["latency_sensitive", "batch"]));
                    spec.app_class = match v {
                        Some("batch") => AppClass::Batch,
                        _ => AppClass::LatencySensitive,
                    };
                }
                "type" => {
                    let v = self.ok(want_choice(f, &["service", "batch"]));
                    spec.job_type = match v {
                        Some("batch") => JobType::Batch,
                        _ => JobType::Service,
                    };
                }
                "restart" => spec.restart = self.restart(f),
                "runtime" => extras.cell = self.runtime(f),
                "alloc" => extras.alloc = self.ok(want_string(f)),
                _ => {}
            }
        }
        if let Some(f) = t.get("tasks") {
            extras.task_overrides = self.task_overrides(t, f, &spec);
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let mut check = spec.clone();
        if check.owner.is_empty() {
            check.owner = OWNER_PLACEHOLDER.to_string();
        }
        if let Err(e) = check.validate() {
            self.errors.push(Error::new(decl.name_span, e.to_string()));
            return None;
        }
        Some((spec, extras))
    }

    /// The task fields of a job (or of a job merged with a per-task override).
    fn task_template(&mut self, t: &Tuple) -> TaskTemplate {
        let mut task = TaskTemplate::default();
        for f in &t.fields {
            match canonical(&f.key) {
                "command" => {
                    if let Some(v) = self
                        .ok(want_string(f)
                            .and_then(|s| substitutions_ok(&s, f.value_span).map(|_| s)))
                    {
                        task.command = v;
                    }
                }
                "args" => task.args = self.args(f),
                "env" => task.env = self.env(f),
                "resources" => task.resources = self.resources(f),
                "ports" => task.ports = self.ports(f),
                _ => {}
            }
        }
        task
    }

    fn task_overrides(
        &mut self,
        job: &Tuple,
        f: &Field,
        spec: &JobSpec,
    ) -> BTreeMap<u32, TaskTemplate> {
        let mut out = BTreeMap::new();
        let Some(per_task) = self.ok(want_tuple(f, "tasks = { 0 = { args = ['--leader'] } }"))
        else {
            return out;
        };
        let Some(base) = self.ok(self.task_fields_only(job)) else {
            return out;
        };
        for o in &per_task.fields {
            if self.steps > EVAL_STEPS_MAX {
                break;
            }
            let Ok(index) = o.key.parse::<u32>() else {
                self.errors.push(
                    Error::new(o.key_span, format!("`{}` is not a task index", o.key)).hint(
                        "per-task overrides are keyed by task index: tasks = { 0 = { ... } }",
                    ),
                );
                continue;
            };
            if index >= spec.replicas {
                self.errors.push(Error::new(
                    o.key_span,
                    format!(
                        "task {index} is overridden, but job `{}` has {} replicas (tasks 0 to {})",
                        spec.name,
                        spec.replicas,
                        i64::from(spec.replicas) - 1
                    ),
                ));
                continue;
            }
            let Value::Tuple(ot) = &o.value else {
                self.errors.push(Error::new(
                    o.value_span,
                    format!(
                        "the override of task {index} must be a tuple, but this is {}",
                        o.value.describe()
                    ),
                ));
                continue;
            };
            let before = self.errors.len();
            self.check_keys(
                ot,
                &TASK_FIELDS,
                &format!("the override of task {index} (only task fields may be overridden)"),
            );
            if self.errors.len() > before {
                continue;
            }
            let Some(over) = self.ok(self.task_fields_only(ot)) else {
                continue;
            };
            let steps = &mut self.steps;
            let merged = merge(&base, &over, o.value_span, &mut |_| {
                charge(steps, o.key_span)
            });
            let Some(merged) = self.ok(merged) else {
                continue;
            };
            let task = self.task_template(&merged);
            let mut check = spec.clone();
            check.task = task.clone();
            check.owner = OWNER_PLACEHOLDER.to_string();
            if let Err(e) = check.validate() {
                self.errors
                    .push(Error::new(o.key_span, format!("task {index}: {e}")));
                continue;
            }
            out.insert(index, task);
        }
        out
    }

    /// A copy of `t` with only task fields, aliases renamed, so overrides merge with the job.
    fn task_fields_only(&self, t: &Tuple) -> Result<Tuple> {
        let fields = t
            .fields
            .iter()
            .filter(|f| TASK_FIELDS.contains(&&*f.key))
            .map(|f| Field {
                key: Rc::from(canonical(&f.key)),
                ..f.clone()
            })
            .collect();
        let span = t
            .fields
            .first()
            .map(|f| f.key_span)
            .unwrap_or(Span::new(0, 0, 0));
        Tuple::new(fields, span)
    }

    fn args(&mut self, f: &Field) -> Vec<String> {
        let mut out = Vec::new();
        match &f.value {
            Value::List(l) => {
                for item in &l.items {
                    if !self.charge(item.span) {
                        break;
                    }
                    match item.value.render_scalar() {
                        Some(s) => {
                            if self.ok(substitutions_ok(&s, item.span)).is_some() {
                                out.push(s);
                            }
                        }
                        None => self.errors.push(Error::new(
                            item.span,
                            format!(
                                "each of `args` must be a string or number, but this is {}",
                                item.value.describe()
                            ),
                        )),
                    }
                }
            }
            Value::Tuple(t) => {
                for a in &t.fields {
                    if !self.charge(a.value_span) {
                        break;
                    }
                    match a.value.render_scalar() {
                        Some(s) => {
                            if self.ok(substitutions_ok(&s, a.value_span)).is_some() {
                                out.push(format!("--{}={s}", a.key));
                            }
                        }
                        None => self.errors.push(Error::new(
                            a.value_span,
                            format!(
                                "flag `{}` must be a string, number or boolean, but this is {}",
                                a.key,
                                a.value.describe()
                            ),
                        )),
                    }
                }
            }
            other => self.errors.push(
                Error::new(
                    f.value_span,
                    format!(
                        "`args` must be a list or a tuple, but this is {}",
                        other.describe()
                    ),
                )
                .hint("write args = ['--port=%port%'] or args = { port = '%port%' }"),
            ),
        }
        out
    }

    fn env(&mut self, f: &Field) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(t) = self.ok(want_tuple(f, "env = { GREETING = 'hello' }")) else {
            return out;
        };
        for v in &t.fields {
            if !self.charge(v.value_span) {
                break;
            }
            if v.key.is_empty() || v.key.contains('=') || v.key.contains('\0') {
                self.errors.push(Error::new(
                    v.key_span,
                    format!("{:?} cannot name an environment variable", v.key),
                ));
                continue;
            }
            match v.value.render_scalar() {
                Some(s) if s.contains('\0') => self.errors.push(Error::new(
                    v.value_span,
                    "an environment value cannot contain a NUL character",
                )),
                Some(s) => {
                    if self.ok(substitutions_ok(&s, v.value_span)).is_some() {
                        out.insert(v.key.to_string(), s);
                    }
                }
                None => self.errors.push(Error::new(
                    v.value_span,
                    format!(
                        "environment variable `{}` must be a string or number, but this is {}",
                        v.key,
                        v.value.describe()
                    ),
                )),
            }
        }
        out
    }

    fn resources(&mut self, f: &Field) -> Resources {
        let mut r = Resources::ZERO;
        let Some(t) = self.ok(want_tuple(f, "resources = { cpu = 500m ram = 512Mi }")) else {
            return r;
        };
        self.check_keys(&t, &RESOURCE_FIELDS, &format!("`{}`", f.key));
        for d in &t.fields {
            match &*d.key {
                "cpu" => r.cpu_millis = self.ok(want_cpu_millis(d)).unwrap_or(0),
                "ram" => r.ram_bytes = self.ok(want_bytes(d)).unwrap_or(0),
                "disk" => r.disk_bytes = self.ok(want_bytes(d)).unwrap_or(0),
                "gpu" => r.gpus = self.ok(want_u32(d, "gpu = 1")).unwrap_or(0),
                _ => {}
            }
        }
        r
    }

    fn ports(&mut self, f: &Field) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let Value::List(l) = &f.value else {
            self.errors.push(
                Error::new(
                    f.value_span,
                    format!(
                        "`ports` must be a list of names, but this is {}",
                        f.value.describe()
                    ),
                )
                .hint("write ports = ['http', 'admin']"),
            );
            return out;
        };
        for item in &l.items {
            if !self.charge(item.span) {
                break;
            }
            let Value::Str(name) = &item.value else {
                self.errors.push(Error::new(
                    item.span,
                    format!(
                        "a port is named by a string, but this is {}",
                        item.value.describe()
                    ),
                ));
                continue;
            };
            if !borg_model::is_valid_name(name) {
                self.errors.push(Error::new(
                    item.span,
                    format!("port name {name:?} is invalid: use letters, digits, '-', '_' or '.'"),
                ));
            } else if out.iter().any(|p| **p == **name) {
                self.errors.push(Error::new(
                    item.span,
                    format!("port `{name}` is listed twice"),
                ));
            } else {
                out.push(name.to_string());
            }
        }
        out
    }

    fn constraints(&mut self, f: &Field) -> Vec<Constraint> {
        let mut out = Vec::new();
        let Value::List(l) = &f.value else {
            self.errors.push(
                Error::new(
                    f.value_span,
                    format!(
                        "`constraints` must be a list of tuples, but this is {}",
                        f.value.describe()
                    ),
                )
                .hint("write constraints = [ { attribute = 'rack', op = '==', value = 'r1' } ]"),
            );
            return out;
        };
        for item in &l.items {
            if !self.charge(item.span) {
                break;
            }
            let Value::Tuple(c) = &item.value else {
                self.errors.push(
                    Error::new(
                        item.span,
                        format!(
                            "a constraint must be a tuple, but this is {}",
                            item.value.describe()
                        ),
                    )
                    .hint("write { attribute = 'rack', op = '==', value = 'r1' }"),
                );
                continue;
            };
            if let Some(c) = self.constraint(c, item.span) {
                out.push(c);
            }
        }
        out
    }

    fn constraint(&mut self, c: &Tuple, span: Span) -> Option<Constraint> {
        let before = self.errors.len();
        self.check_keys(c, &CONSTRAINT_FIELDS, "a constraint");
        let attribute = match c.get("attribute") {
            Some(a) => self.ok(want_string(a)),
            None => {
                self.errors.push(
                    Error::new(span, "this constraint names no `attribute`")
                        .hint("add attribute = 'rack' (a machine attribute)"),
                );
                None
            }
        };
        let value = c.get("value").and_then(|v| self.ok(want_scalar(v)));
        let values = c.get("values").and_then(|v| self.ok(want_scalar_list(v)));
        if let (Some(_), Some(v)) = (c.get("value"), c.get("values")) {
            self.errors.push(
                Error::new(v.key_span, "set `value` or `values`, not both")
                    .hint("`values` is for the operators in and not_in"),
            );
        }
        let op = match c.get("op") {
            Some(o) => self.ok(want_op(o)),
            None if c.get("values").is_some() => Some(ConstraintOp::In),
            None if c.get("value").is_some() => Some(ConstraintOp::Eq),
            None => Some(ConstraintOp::Exists),
        };
        let soft = c
            .get("soft")
            .and_then(|s| self.ok(want_bool(s)))
            .unwrap_or(false);
        if self.errors.len() > before {
            return None;
        }
        let values = match (value, values) {
            (Some(v), _) => vec![v],
            (None, Some(vs)) => vs,
            (None, None) => Vec::new(),
        };
        if let Some(ConstraintOp::Regex) = op {
            if let Some(pattern) = values.first() {
                if let Err(e) = regex::Regex::new(pattern) {
                    let at = c.get("value").map(|f| f.value_span).unwrap_or(span);
                    self.errors
                        .push(Error::new(at, format!("invalid regular expression: {e}")));
                    return None;
                }
            }
        }
        Some(Constraint {
            attribute: attribute?,
            op: op?,
            values,
            soft,
        })
    }

    fn restart(&mut self, f: &Field) -> RestartPolicy {
        let mut policy = RestartPolicy::default();
        let Some(t) = self.ok(want_tuple(
            f,
            "restart = { max_attempts = 5 interval = 10m delay = 2s }",
        )) else {
            return policy;
        };
        self.check_keys(&t, &RESTART_FIELDS, "`restart`");
        for r in &t.fields {
            match &*r.key {
                "max_attempts" => {
                    if let Some(v) = self.ok(want_u32(r, "max_attempts = 5")) {
                        policy.max_attempts = v;
                    }
                }
                "interval" => {
                    if let Some(ms) = self.ok(want_duration_ms(r)) {
                        if ms % 1000 != 0 {
                            self.errors.push(Error::new(
                                r.value_span,
                                "the restart interval must be whole seconds",
                            ));
                        } else {
                            policy.interval_s = ms / 1000;
                        }
                    }
                }
                "delay" => {
                    if let Some(ms) = self.ok(want_duration_ms(r)) {
                        policy.delay_ms = ms;
                    }
                }
                _ => {}
            }
        }
        policy
    }

    fn runtime(&mut self, f: &Field) -> Option<String> {
        let t = self.ok(want_tuple(f, "runtime = { cell = 'ic' }"))?;
        self.check_keys(&t, &RUNTIME_FIELDS, "`runtime`");
        let cell = t.get("cell")?;
        self.ok(want_string(cell))
    }

    pub fn alloc(&mut self, decl: &Decl) -> Option<AllocSpec> {
        let before = self.errors.len();
        let t = self.declared_tuple(decl, "alloc")?;
        self.check_keys(t, &ALLOC_FIELDS, &format!("alloc `{}`", decl.name));
        let mut alloc = AllocSpec {
            set: AllocSetSpec {
                name: decl.name.to_string(),
                replicas: 1,
                ..AllocSetSpec::default()
            },
            cell: None,
        };
        for f in &t.fields {
            match canonical(&f.key) {
                "owner" => alloc.set.owner = self.ok(want_string(f)).unwrap_or_default(),
                "priority" => alloc.set.priority = self.ok(want_priority(f)).unwrap_or(0),
                "replicas" => {
                    alloc.set.replicas = self.ok(want_u32(f, "replicas = 3")).unwrap_or(1)
                }
                "resources" => alloc.set.resources = self.resources(f),
                "constraints" => alloc.set.constraints = self.constraints(f),
                "runtime" => alloc.cell = self.runtime(f),
                _ => {}
            }
        }
        if self.errors.len() > before {
            return None;
        }
        let problem = if !borg_model::is_valid_name(&alloc.set.name) {
            Some(format!(
                "alloc name {:?} is invalid: use 1-128 letters, digits, '-', '_' or '.', not starting with '.'",
                alloc.set.name
            ))
        } else if !alloc.set.owner.is_empty() && !borg_model::is_valid_name(&alloc.set.owner) {
            Some(format!(
                "owner {:?} is invalid: use 1-128 letters, digits, '-', '_' or '.'",
                alloc.set.owner
            ))
        } else if alloc.set.replicas > borg_model::job::JOB_REPLICAS_MAX {
            Some(format!(
                "alloc `{}` asks for {} instances; the most is {}",
                alloc.set.name,
                alloc.set.replicas,
                borg_model::job::JOB_REPLICAS_MAX
            ))
        } else if alloc.set.resources.cpu_millis == 0 || alloc.set.resources.ram_bytes == 0 {
            Some(format!(
                "alloc `{}` reserves no cpu or no ram: an alloc needs both (for example resources = {{ cpu = 2 ram = 4Gi }})",
                alloc.set.name
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            self.errors.push(Error::new(decl.name_span, message));
            return None;
        }
        Some(alloc)
    }

    /// Jobs placed in an alloc set: the set exists, has an instance per task, and every
    /// instance holds one task of each of its jobs.
    pub fn check_allocs(
        &mut self,
        jobs: &[(JobSpec, JobExtras, Span)],
        allocs: &[(AllocSpec, Span)],
    ) {
        for (job, extras, span) in jobs {
            let Some(name) = &extras.alloc else { continue };
            let Some((alloc, _)) = allocs.iter().find(|(a, _)| &a.set.name == name) else {
                let hint = did_you_mean(name, allocs.iter().map(|(a, _)| a.set.name.as_str()))
                    .unwrap_or_else(|| "declare it in this file: alloc NAME = { ... }".into());
                self.errors.push(
                    Error::new(
                        *span,
                        format!(
                            "job `{}` names alloc `{name}`, which is not declared in this file",
                            job.name
                        ),
                    )
                    .hint(hint),
                );
                continue;
            };
            if job.replicas > alloc.set.replicas {
                self.errors.push(Error::new(
                    *span,
                    format!(
                        "job `{}` has {} replicas but alloc `{}` has only {} instances",
                        job.name, job.replicas, alloc.set.name, alloc.set.replicas
                    ),
                ));
            }
        }
        for (alloc, span) in allocs {
            let used = jobs
                .iter()
                .filter(|(_, x, _)| x.alloc.as_deref() == Some(alloc.set.name.as_str()))
                .fold(Resources::ZERO, |sum, (j, _, _)| sum + j.task.resources);
            let over = used.exceeded_dimensions(&alloc.set.resources);
            if !over.is_empty() {
                self.errors.push(Error::new(
                    *span,
                    format!(
                        "the tasks placed in alloc `{}` need {used} per instance, more than it reserves ({}) in {}",
                        alloc.set.name,
                        alloc.set.resources,
                        over.join(", ")
                    ),
                ));
            }
        }
    }
}

fn charge(steps: &mut u64, span: Span) -> Result<()> {
    crate::eval::charge_phase(steps, span, crate::eval::Phase::Checking)
}

/// `%name%` must be a known substitution when it looks like a misspelt one. Other `%...%`
/// text is left alone: it may be shell syntax (`date +%H%M`).
fn substitutions_ok(s: &str, span: Span) -> Result<()> {
    let mut rest = s;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('%') {
            let name = &after[..name_len];
            if !SUBSTITUTIONS.contains(&name) {
                if let Some(known) = crate::suggest::closest(name, SUBSTITUTIONS) {
                    return Err(Error::new(span, format!("unknown runtime substitution `%{name}%`"))
                        .hint(format!("did you mean `%{known}%`? the substitutions are %port%, %task_index%, %job%, %user% and %cell%")));
                }
            }
            rest = &after[name_len + 1..];
        } else {
            rest = after;
        }
    }
    Ok(())
}

fn type_error(f: &Field, what: &str, example: &str) -> Error {
    Error::new(
        f.value_span,
        format!(
            "`{}` must be {what}, but this is {}",
            f.key,
            f.value.describe()
        ),
    )
    .hint(format!("for example: {example}"))
}

fn want_string(f: &Field) -> Result<String> {
    match &f.value {
        Value::Str(s) => Ok(s.to_string()),
        _ => Err(type_error(f, "a string", &format!("{} = 'text'", f.key))),
    }
}

fn want_bool(f: &Field) -> Result<bool> {
    match &f.value {
        Value::Bool(b) => Ok(*b),
        _ => Err(type_error(f, "true or false", &format!("{} = true", f.key))),
    }
}

fn want_tuple(f: &Field, example: &str) -> Result<Rc<Tuple>> {
    match &f.value {
        Value::Tuple(t) => Ok(t.clone()),
        _ => Err(type_error(f, "a tuple", example)),
    }
}

fn want_scalar(f: &Field) -> Result<String> {
    f.value
        .render_scalar()
        .ok_or_else(|| type_error(f, "a string or number", &format!("{} = 'r1'", f.key)))
}

fn want_scalar_list(f: &Field) -> Result<Vec<String>> {
    let Value::List(l) = &f.value else {
        return Err(type_error(f, "a list", &format!("{} = ['a', 'b']", f.key)));
    };
    l.items
        .iter()
        .map(|i| {
            i.value.render_scalar().ok_or_else(|| {
                Error::new(
                    i.span,
                    format!(
                        "each of `{}` must be a string or number, but this is {}",
                        f.key,
                        i.value.describe()
                    ),
                )
            })
        })
        .collect()
}

fn want_choice<'a>(f: &Field, choices: &[&'a str]) -> Result<&'a str> {
    let Value::Str(s) = &f.value else {
        return Err(type_error(
            f,
            &format!("one of '{}'", choices.join("', '")),
            &format!("{} = '{}'", f.key, choices[0]),
        ));
    };
    choices
        .iter()
        .find(|c| **c == &**s)
        .copied()
        .ok_or_else(|| {
            Error::new(
                f.value_span,
                format!(
                    "`{}` must be one of '{}', not {:?}",
                    f.key,
                    choices.join("', '"),
                    &**s
                ),
            )
            .maybe_hint(did_you_mean(s, choices.iter().copied()))
        })
}

/// A plain whole number that fits u32.
fn want_u32(f: &Field, example: &str) -> Result<u32> {
    let Value::Num(q) = &f.value else {
        return Err(type_error(f, "a whole number", example));
    };
    if q.unit != Unit::Plain {
        return Err(type_error(
            f,
            "a plain whole number without a unit",
            example,
        ));
    }
    if q.value.fract() != 0.0 || q.value < 0.0 || q.value > f64::from(u32::MAX) {
        return Err(Error::new(
            f.value_span,
            format!(
                "`{}` must be a whole number from 0 to {}, not {}",
                f.key,
                u32::MAX,
                q.render()
            ),
        ));
    }
    Ok(q.value as u32)
}

fn want_priority(f: &Field) -> Result<Priority> {
    const BANDS: [(&str, Priority); 4] = [
        ("free", 0),
        ("batch", 100),
        ("production", 200),
        ("monitoring", 300),
    ];
    if let Value::Str(s) = &f.value {
        return BANDS.iter().find(|(n, _)| *n == &**s).map(|(_, p)| *p).ok_or_else(|| {
            Error::new(f.value_span, format!("{:?} is not a priority band", &**s))
                .hint(did_you_mean(s, BANDS.iter().map(|(n, _)| *n)).unwrap_or_else(|| {
                    "give a number (free 0-99, batch 100-199, production 200-299, monitoring 300+) or a band name".into()
                }))
        });
    }
    want_u32(
        f,
        "priority = 100 (or a band: 'free', 'batch', 'production', 'monitoring')",
    )
}

/// A non-negative whole count of a base unit after scaling, as u64.
fn whole(f: &Field, amount: f64, what: &str) -> Result<u64> {
    if amount < 0.0 {
        return Err(Error::new(
            f.value_span,
            format!("`{}` cannot be negative", f.key),
        ));
    }
    let rounded = amount.round();
    // Tolerate binary floating-point noise (0.1 cores = 100.00000000000001m).
    if (amount - rounded).abs() > 1e-6 * amount.max(1.0) {
        return Err(Error::new(
            f.value_span,
            format!("`{}` must be a whole number of {what}", f.key),
        ));
    }
    if rounded >= u64::MAX as f64 {
        return Err(Error::new(
            f.value_span,
            format!("`{}` is too large", f.key),
        ));
    }
    Ok(rounded as u64)
}

fn want_cpu_millis(f: &Field) -> Result<u64> {
    let Value::Num(q) = &f.value else {
        return Err(type_error(
            f,
            "a number of cores",
            "cpu = 0.5 or cpu = 500m",
        ));
    };
    match q.unit {
        Unit::Plain => whole(f, q.value * 1000.0, "millicores (0.001 cores)"),
        Unit::Milli => whole(f, q.value, "millicores"),
        _ => Err(type_error(
            f,
            "cores (0.5) or millicores (500m)",
            "cpu = 500m",
        )),
    }
}

fn want_bytes(f: &Field) -> Result<u64> {
    let Value::Num(q) = &f.value else {
        return Err(type_error(f, "a byte size", &format!("{} = 512Mi", f.key)));
    };
    match q.unit {
        Unit::Plain | Unit::Bytes => whole(f, q.value, "bytes"),
        Unit::Milli => Err(type_error(
            f,
            "a byte size",
            &format!("{} = 512Mi (m is milli; megabytes are M or Mi)", f.key),
        )),
        _ => Err(type_error(f, "a byte size", &format!("{} = 512Mi", f.key))),
    }
}

fn want_duration_ms(f: &Field) -> Result<u64> {
    let Value::Num(q) = &f.value else {
        return Err(type_error(f, "a duration", &format!("{} = 30s", f.key)));
    };
    match q.unit {
        Unit::Seconds => whole(f, q.value * 1000.0, "milliseconds"),
        Unit::Milli => whole(f, q.value * 60_000.0, "milliseconds"),
        _ => Err(type_error(
            f,
            "a duration with a unit (ms, s, m, h)",
            &format!("{} = 30s", f.key),
        )),
    }
}

fn want_op(f: &Field) -> Result<ConstraintOp> {
    const OPS: [(&str, ConstraintOp); 16] = [
        ("==", ConstraintOp::Eq),
        ("eq", ConstraintOp::Eq),
        ("!=", ConstraintOp::Ne),
        ("ne", ConstraintOp::Ne),
        ("=~", ConstraintOp::Regex),
        ("regex", ConstraintOp::Regex),
        ("in", ConstraintOp::In),
        ("not_in", ConstraintOp::NotIn),
        ("version>=", ConstraintOp::VersionGe),
        ("version_ge", ConstraintOp::VersionGe),
        ("version<", ConstraintOp::VersionLt),
        ("version_lt", ConstraintOp::VersionLt),
        ("exists", ConstraintOp::Exists),
        (">=", ConstraintOp::VersionGe),
        ("<", ConstraintOp::VersionLt),
        ("=", ConstraintOp::Eq),
    ];
    let Value::Str(s) = &f.value else {
        return Err(type_error(f, "an operator string", "op = '=='"));
    };
    OPS.iter().find(|(n, _)| *n == &**s).map(|(_, op)| *op).ok_or_else(|| {
        Error::new(f.value_span, format!("{:?} is not a constraint operator", &**s)).hint(
            did_you_mean(s, OPS.iter().map(|(n, _)| *n))
                .map(|h| format!("{h} the operators are ==, !=, =~, in, not_in, version>=, version<, exists"))
                .unwrap_or_else(|| "the operators are ==, !=, =~, in, not_in, version>=, version<, exists".into()),
        )
    })
}
