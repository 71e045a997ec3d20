//! BCL, the borg configuration language: lexer, parser, evaluator to JobSpec, diagnostics.
//!
//! ```
//! let loaded = bcl::load_str(
//!     "job hello = { command = '/bin/sleep' args = ['100'] resources = { cpu = 100m ram = 32Mi } }",
//!     "hello.bcl",
//! ).unwrap();
//! assert_eq!(loaded.jobs[0].task.resources.cpu_millis, 100);
//! ```
//!
//! The language is described in docs/bcl.md. Loading is: lex and parse each file, evaluate its
//! items in order (imports first evaluated and cached), then check every `job` and `alloc` of
//! the root file against the schema and `JobSpec::validate`, collecting every problem found.

mod ast;
mod diag;
mod eval;
mod lexer;
mod parser;
mod schema;
mod suggest;
mod value;

pub use diag::{Diagnostic, Diagnostics};
pub use schema::SUBSTITUTIONS;

use borg_model::{AllocSetSpec, JobSpec, TaskTemplate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Largest source file read (the root or an import), in bytes.
pub const SOURCE_FILE_BYTES_MAX: usize = 1 << 20;
/// Most files one load may read, the root included.
pub const SOURCE_FILES_MAX: usize = 64;
/// Longest chain of imports (a imports b imports c ...).
pub const IMPORT_DEPTH_MAX: usize = 16;
/// Evaluation budget: every expression evaluated and every field merged costs a step.
pub const EVAL_STEPS_MAX: u64 = 1_000_000;
/// Deepest expression tree (and parser recursion).
pub const EXPR_DEPTH_MAX: u32 = 64;
/// Deepest nesting of lists and tuples in a value.
pub const VALUE_DEPTH_MAX: u32 = 32;
/// Longest string a concatenation may build.
pub const STRING_BYTES_MAX: usize = 256 * 1024;
/// Longest list, written or built by concatenation.
pub const LIST_LEN_MAX: usize = 10_000;
/// Most fields in one tuple (a module imported `as` a name is a tuple too).
pub const TUPLE_FIELDS_MAX: usize = 10_000;
/// Most diagnostics reported for one load; the rest are summarised in one line.
pub const DIAGNOSTICS_MAX: usize = 20;
/// Stack of the thread a load runs on. The recursion of the parser and evaluator is bounded
/// (EXPR_DEPTH_MAX, VALUE_DEPTH_MAX) but needs about 2 MiB at those bounds in a debug build,
/// more than a caller's thread may have; its own thread makes the bound hold everywhere.
pub const LOADER_STACK_BYTES: usize = 16 << 20;

/// An alloc (or, with `replicas` > 1, an alloc set): resources reserved on a machine for
/// tasks of one or more jobs placed together, as the model's `AllocSetSpec` (owner empty when
/// unset: the CLI fills in the user), plus the cell its `runtime` names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocSpec {
    #[serde(flatten)]
    pub set: AllocSetSpec,
    pub cell: Option<String>,
}

/// What a job says beyond its `JobSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExtras {
    /// `runtime = { cell = '...' }`: the cell the job is meant for.
    pub cell: Option<String>,
    /// `alloc = 'NAME'`: the alloc set whose instances hold this job's tasks (task i in
    /// alloc instance i).
    pub alloc: Option<String>,
    /// `tasks = { 3 = { ... } }`: the full template of each task that differs from the job's.
    pub task_overrides: BTreeMap<u32, TaskTemplate>,
}

impl JobExtras {
    fn is_empty(&self) -> bool {
        self.cell.is_none() && self.alloc.is_none() && self.task_overrides.is_empty()
    }
}

/// The jobs and allocs declared in a BCL file (not those of files it imports).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loaded {
    /// In file order. Owners left unset are empty.
    pub jobs: Vec<JobSpec>,
    pub allocs: Vec<AllocSpec>,
    /// By job name, for jobs that have any extras.
    pub job_extras: BTreeMap<String, JobExtras>,
}

impl Loaded {
    /// Sets `owner` on every job and alloc that left it unset: the CLI passes the user.
    pub fn fill_owner(&mut self, user: &str) {
        for job in self.jobs.iter_mut().filter(|j| j.owner.is_empty()) {
            job.owner = user.to_string();
        }
        for alloc in self.allocs.iter_mut().filter(|a| a.set.owner.is_empty()) {
            alloc.set.owner = user.to_string();
        }
    }

    /// The template task `index` of `job` runs: its per-task override, else the job's.
    pub fn task_template(&self, job: &str, index: u32) -> Option<&TaskTemplate> {
        let spec = self.jobs.iter().find(|j| j.name == job)?;
        if index >= spec.replicas {
            return None;
        }
        Some(
            self.job_extras
                .get(job)
                .and_then(|x| x.task_overrides.get(&index))
                .unwrap_or(&spec.task),
        )
    }
}

/// Loads a BCL file; imports are resolved relative to its directory.
pub fn load_file(path: &Path) -> Result<Loaded, Diagnostics> {
    let name = path.display().to_string();
    let text = eval::read_source(path)
        .map_err(|message| Diagnostics::single(Diagnostic::for_file(&name, message)))?;
    load_str(&text, &name)
}

/// Loads BCL source text. `file_name` names it in diagnostics, and imports are resolved
/// relative to its directory.
pub fn load_str(source: &str, file_name: &str) -> Result<Loaded, Diagnostics> {
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("bcl-loader".into())
            .stack_size(LOADER_STACK_BYTES)
            .spawn_scoped(scope, || load_here(source, file_name));
        match spawned {
            // A panic is a bug: let it reach the caller (and the fuzzer) unchanged.
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: the current one will do for all but extreme inputs.
            Err(_) => load_here(source, file_name),
        }
    })
}

fn load_here(source: &str, file_name: &str) -> Result<Loaded, Diagnostics> {
    let mut loader = eval::Loader::new();
    let module = match loader.load_root(file_name, source.to_string()) {
        Ok(m) => m,
        Err(e) => return Err(Diagnostics::single(loader.sources.diagnostic(e))),
    };
    let mut checker = schema::Checker::new();
    let mut jobs = Vec::new();
    for decl in &module.jobs {
        if let Some((spec, extras)) = checker.job(decl) {
            jobs.push((spec, extras, decl.name_span));
        }
    }
    let mut allocs = Vec::new();
    for decl in &module.allocs {
        if let Some(alloc) = checker.alloc(decl) {
            allocs.push((alloc, decl.name_span));
        }
    }
    checker.check_allocs(&jobs, &allocs);
    if !checker.errors.is_empty() {
        let total = checker.errors.len();
        let mut items: Vec<Diagnostic> = checker
            .errors
            .into_iter()
            .take(DIAGNOSTICS_MAX)
            .map(|e| loader.sources.diagnostic(e))
            .collect();
        if total > DIAGNOSTICS_MAX {
            items.push(Diagnostic::for_file(
                file_name,
                format!("{} more errors not shown", total - DIAGNOSTICS_MAX),
            ));
        }
        return Err(Diagnostics { items });
    }
    let mut loaded = Loaded::default();
    for (spec, extras, _) in jobs {
        if !extras.is_empty() {
            loaded.job_extras.insert(spec.name.clone(), extras);
        }
        loaded.jobs.push(spec);
    }
    loaded.allocs = allocs.into_iter().map(|(a, _)| a).collect();
    Ok(loaded)
}
