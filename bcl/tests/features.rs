//! One test per language feature, with valid input and invalid input whose error text is
//! asserted.

use bcl::{load_str, Loaded};
use borg_model::{AppClass, ConstraintOp, JobType, Resources};
use std::path::Path;

/// Fields that make a job valid, for tests about something else.
const RUN: &str = "command = '/bin/true' resources = { cpu = 100m ram = 1Mi }";

fn load(src: &str) -> Loaded {
    load_str(src, "t.bcl").unwrap_or_else(|d| panic!("expected to load, got:\n{d}"))
}

fn error(src: &str) -> String {
    match load_str(src, "t.bcl") {
        Ok(l) => panic!("expected an error, loaded {l:?}"),
        Err(d) => d.to_string(),
    }
}

/// A job `j` that inherits RUN and sets `fields` (line 2 of the file).
fn job(fields: &str) -> borg_model::JobSpec {
    load(&format!("run = {{ {RUN} }}\njob j = run {{ {fields} }}"))
        .jobs
        .remove(0)
}

fn job_error(fields: &str) -> String {
    error(&format!("run = {{ {RUN} }}\njob j = run {{ {fields} }}"))
}

#[test]
fn borgs_published_example_loads() {
    let l = load(
        "job hello_world = {
           runtime = { cell = 'ic' }
           binary = '/bin/hello'
           args = { port = '%port%' }
           requirements = { ram = 100M disk = 100M cpu = 0.1 }
           replicas = 5
         }",
    );
    let j = &l.jobs[0];
    assert_eq!(j.name, "hello_world");
    assert_eq!(j.task.command, "/bin/hello");
    assert_eq!(j.task.args, ["--port=%port%"]);
    assert_eq!(
        j.task.resources,
        Resources {
            cpu_millis: 100,
            ram_bytes: 100_000_000,
            disk_bytes: 100_000_000,
            gpus: 0
        }
    );
    assert_eq!(j.replicas, 5);
    assert_eq!(l.job_extras["hello_world"].cell.as_deref(), Some("ic"));
}

#[test]
fn comments() {
    let l = load(&format!(
        "# one\n// two\n/* three\n four */ job j = {{ {RUN} }} # five"
    ));
    assert_eq!(l.jobs.len(), 1);
    assert_eq!(
        error("x = 1\n  /* never closed"),
        "t.bcl:2:3: error: this comment is never closed\n 2 |   /* never closed\n   |   ^^\n  hint: end a block comment with */"
    );
}

#[test]
fn strings() {
    let j = job(r#"env = { A = 'it\'s' B = "say \"hi\"" C = 'a\tb\nc' }"#);
    assert_eq!(j.task.env["A"], "it's");
    assert_eq!(j.task.env["B"], "say \"hi\"");
    assert_eq!(j.task.env["C"], "a\tb\nc");
    assert_eq!(
        error("x = 'open\ny = 2"),
        "t.bcl:1:5: error: this string is never closed\n 1 | x = 'open\n   |     ^\n  hint: end it with ' on the same line; write a line break inside a string as \\n"
    );
    assert!(error(r"x = 'a\q'").contains("unknown escape `\\q` in a string"));
}

#[test]
fn numbers_with_units() {
    let cpu = |v: &str| {
        job(&format!("resources = {{ cpu = {v} ram = 1Mi }}"))
            .task
            .resources
            .cpu_millis
    };
    assert_eq!(cpu("0.5"), 500);
    assert_eq!(cpu("500m"), 500);
    assert_eq!(cpu("0.1"), 100);
    assert_eq!(cpu("2"), 2000);
    let ram = |v: &str| {
        job(&format!("resources = {{ cpu = 1 ram = {v} }}"))
            .task
            .resources
            .ram_bytes
    };
    assert_eq!(ram("100M"), 100_000_000);
    assert_eq!(ram("512Mi"), 512 << 20);
    assert_eq!(ram("1.5Gi"), 3 << 29);
    assert_eq!(ram("2K"), 2000);
    assert_eq!(ram("4Ki"), 4096);
    assert_eq!(ram("1G"), 1_000_000_000);
    assert_eq!(ram("1_000B"), 1000);
    assert_eq!(ram("1048576"), 1 << 20);
    let r = job("restart = { interval = 5m delay = 250ms }").restart;
    assert_eq!((r.interval_s, r.delay_ms), (300, 250));
    let r = job("restart = { interval = 1h delay = 2s }").restart;
    assert_eq!((r.interval_s, r.delay_ms), (3600, 2000));

    let e = error("job j = { command = '/bin/true' resources = { cpu = 1 ram = 500m } }");
    assert!(
        e.starts_with("t.bcl:1:61: error: `ram` must be a byte size, but this is an `m` quantity"),
        "{e}"
    );
    assert!(
        e.contains("hint: for example: ram = 512Mi (m is milli; megabytes are M or Mi)"),
        "{e}"
    );
    assert!(job_error("resources = { cpu = 1Gi ram = 1Mi }")
        .contains("`cpu` must be cores (0.5) or millicores (500m), but this is a byte size"));
    let e = error("x = 10kb");
    assert!(
        e.contains("t.bcl:1:7: error: unknown unit `kb` after a number"),
        "{e}"
    );
    assert!(
        e.contains("hint: units are m B K M G T Ki Mi Gi Ti ms s h"),
        "{e}"
    );
    assert!(error("x = 10GB").contains("hint: write gigabytes as G (10^9) or Gi (2^30)"));
    assert!(job_error("restart = { delay = 5 }").contains(
        "`delay` must be a duration with a unit (ms, s, m, h), but this is a plain number"
    ));
    assert!(job_error("resources = { cpu = -1 ram = 1Mi }").contains("`cpu` cannot be negative"));
    assert!(job_error("resources = { cpu = 0.0001 ram = 1Mi }")
        .contains("`cpu` must be a whole number of millicores (0.001 cores)"));
    assert!(job_error("replicas = 2.5")
        .contains("`replicas` must be a whole number from 0 to 4294967295, not 2.5"));
}

#[test]
fn booleans() {
    let l = load(&format!(
        "a = true && !false\nb = false || a\njob j = {{ {RUN} env = {{ A = a B = b }} }}"
    ));
    assert_eq!(l.jobs[0].task.env["A"], "true");
    assert_eq!(l.jobs[0].task.env["B"], "true");
    assert!(error("x = 1 && true").contains("`&&` needs booleans, but this is a plain number"));
    assert!(error("x = !3").contains("`!` needs a boolean, but this is a plain number"));
}

#[test]
fn lists() {
    let j = job("ports = ['http', 'admin',] args = ['a', 'b'] + ['c', 3]");
    assert_eq!(j.task.ports, ["http", "admin"]);
    assert_eq!(j.task.args, ["a", "b", "c", "3"]);
    let l = load(&format!(
        "p = ['x', 'y']\njob j = {{ {RUN} args = [p[1]] }}"
    ));
    assert_eq!(l.jobs[0].task.args, ["y"]);
    assert!(error("p = ['x']\nq = p[3]")
        .contains("t.bcl:2:7: error: index 3 is past the end of a list of 1 items"));
    let e = error("p = ['x' 'y']");
    assert!(
        e.contains("expected `,` or `]` in a list, found a string"),
        "{e}"
    );
    assert!(e.contains("hint: separate list items with commas"), "{e}");
    assert!(job_error("args = [['nested']]")
        .contains("each of `args` must be a string or number, but this is a list"));
}

#[test]
fn nested_tuples() {
    let l = load(&format!(
        "t = {{ a = {{ b = {{ c = 'deep' }} }}, 'odd key' = 1; n = 2 }}\njob j = {{ {RUN} args = [t.a.b.c, str(t['odd key']), str(t.n)] }}"
    ));
    assert_eq!(l.jobs[0].task.args, ["deep", "1", "2"]);
    let e = error("t = { ram = 1 }\nx = t.rma");
    assert!(
        e.contains("t.bcl:2:7: error: this tuple has no field `rma`"),
        "{e}"
    );
    assert!(e.contains("hint: did you mean `ram`?"), "{e}");
    assert!(error("t = { a = 1 }\nx = t.zzzzzz").contains("hint: its fields are: a"));
    assert!(error("t = { a = 1 a = 2 }")
        .contains("t.bcl:1:13: error: field `a` is set twice in this tuple"));
    assert!(error("t = 'x'\ny = t.a").contains("`.a` needs a tuple, but this is a string"));
}

#[test]
fn variables() {
    let l = load("r = 7\nram = 64Mi\njob j = { command = 'x' replicas = r resources = { cpu = 1 ram = ram } }");
    assert_eq!(l.jobs[0].replicas, 7);
    assert_eq!(l.jobs[0].task.resources.ram_bytes, 64 << 20);
    let e = error("a = b\nb = 1");
    assert!(e.contains("t.bcl:1:5: error: `b` is not defined"), "{e}");
    assert!(
        e.contains("hint: it is defined later, at line 2: define names before using them"),
        "{e}"
    );
    assert!(error("replicas = 1\nx = replica").contains("hint: did you mean `replicas`?"));
    let e = error("a = 1\na = 2");
    assert!(
        e.contains("t.bcl:2:1: error: `a` is already defined at line 1"),
        "{e}"
    );
    assert!(error("x = port").contains("hint: runtime substitutions are written inside strings"));
}

#[test]
fn arithmetic() {
    let j = job("replicas = 2 * 3 + 1 - (4 / 2) % 2 priority = 10 * (10 + 1)");
    assert_eq!((j.replicas, j.priority), (7, 110));
    let j = job("resources = { cpu = 250m * 2 + 100m ram = 2 * 512Mi + 1Gi / 2 disk = 3Gi - 1Gi }");
    assert_eq!(j.task.resources.cpu_millis, 600);
    assert_eq!(j.task.resources.ram_bytes, (1 << 30) + (512 << 20));
    assert_eq!(j.task.resources.disk_bytes, 2 << 30);
    let j = job("replicas = 4Gi / 1Gi");
    assert_eq!(j.replicas, 4);
    let e = error("x = 1Gi + 1");
    assert!(
        e.contains("error: cannot use `+` on a byte size and a plain number"),
        "{e}"
    );
    assert!(e.contains("hint: give both sides the same kind of unit (a plain byte count is written with B: 512B)"), "{e}");
    assert!(error("x = 1 / 0").contains("t.bcl:1:9: error: division by zero"));
    assert!(error("x = 1Gi * 1Gi").contains("cannot multiply two quantities that both have units"));
    assert!(error("x = 1.5 % 2").contains("`%` needs two whole plain numbers"));
}

#[test]
fn string_concatenation() {
    let l = load(&format!("s = 'web'\nv = 3\njob j = {{ {RUN} args = ['/srv/' + s + '-v' + str(v), str(1.5Gi), str(500m), str(90s)] }}"));
    assert_eq!(
        l.jobs[0].task.args,
        ["/srv/web-v3", "1610612736", "500m", "90s"]
    );
    let e = error("x = 'web-' + 3");
    assert!(e.contains("error: cannot add a string and a number"), "{e}");
    assert!(
        e.contains("hint: convert the number with str(...), as in 'web-' + str(3)"),
        "{e}"
    );
    assert!(error("x = 'a' * 2").contains("`*` does not apply to a string and a plain number"));
    assert!(
        error("x = str([1])").contains("str() converts a string, number or boolean, not a list")
    );
    assert!(error("x = lne('a')").contains("hint: did you mean `len`?"));
}

#[test]
fn conditionals() {
    let src = |stage: &str| {
        format!(
            "stage = '{stage}'\njob j = {{ {RUN} replicas = if stage == 'prod' then 10 else if stage == 'staging' then 2 else 1 }}"
        )
    };
    assert_eq!(load(&src("prod")).jobs[0].replicas, 10);
    assert_eq!(load(&src("staging")).jobs[0].replicas, 2);
    assert_eq!(load(&src("dev")).jobs[0].replicas, 1);
    assert_eq!(
        job("replicas = if 2Gi > 1Gi && 'a' < 'b' then 3 else 4").replicas,
        3
    );
    let e = error("x = if 'yes' then 1 else 2");
    assert!(
        e.contains(
            "t.bcl:1:8: error: the condition of `if` must be a boolean, but this is a string"
        ),
        "{e}"
    );
    assert!(error("x = if true then 1").contains("expected `else` after the `then` branch"));
    assert!(error("x = 1 == 'a'").contains("`==` does not apply to a plain number and a string"));
    assert!(error("x = 1Gi < 5").contains("cannot use `<` on a byte size and a plain number"));
}

#[test]
fn inheritance_and_override() {
    let l = load(
        "base = {
           owner = 'webteam' priority = 100 command = '/srv/web'
           resources = { cpu = 500m ram = 512Mi } env = { LOG = 'info', KEEP = 'yes' }
           args = { port = '%port%' mode = 'a' }
         }
         job web = base { replicas = 10 }
         job dbg = base { resources = { ram = 1Gi } env = { LOG = 'debug' } args = { mode = 'b' extra = 1 } }
         job canary = web { replicas = 1 }",
    );
    let [web, dbg, canary] = &l.jobs[..] else {
        panic!("three jobs")
    };
    assert_eq!((web.replicas, web.owner.as_str()), (10, "webteam"));
    assert_eq!(dbg.task.resources, Resources::new(500, 1 << 30));
    assert_eq!(dbg.task.env["LOG"], "debug");
    assert_eq!(dbg.task.env["KEEP"], "yes");
    assert_eq!(dbg.task.args, ["--port=%port%", "--mode=b", "--extra=1"]);
    assert_eq!(dbg.replicas, 1);
    assert_eq!(
        (canary.replicas, canary.task.command.as_str()),
        (1, "/srv/web")
    );
    let e = error("base = 'x'\njob j = base { replicas = 1 }");
    assert!(
        e.contains(
            "t.bcl:2:9: error: only a tuple can be extended with `{ ... }`, but this is a string"
        ),
        "{e}"
    );
}

#[test]
fn per_task_overrides() {
    let l = load(&format!(
        "job db = {{ {RUN} replicas = 3 args = ['--replica'] env = {{ A = '1' }}
           tasks = {{ 0 = {{ args = ['--primary'] resources = {{ ram = 4Gi }} env = {{ B = '2' }} }}, 2 = {{ binary = '/bin/false' }} }} }}"
    ));
    let t0 = l.task_template("db", 0).unwrap();
    assert_eq!(t0.args, ["--primary"]);
    assert_eq!(t0.resources, Resources::new(100, 4 << 30));
    assert_eq!((t0.env["A"].as_str(), t0.env["B"].as_str()), ("1", "2"));
    assert_eq!(l.task_template("db", 1).unwrap().args, ["--replica"]);
    assert_eq!(l.task_template("db", 2).unwrap().command, "/bin/false");
    assert_eq!(l.task_template("db", 2).unwrap().args, ["--replica"]);
    assert!(l.task_template("db", 3).is_none());
    assert_eq!(l.job_extras["db"].task_overrides.len(), 2);

    let e = job_error("replicas = 2 tasks = { 5 = { args = [] } }");
    assert!(
        e.contains("error: task 5 is overridden, but job `j` has 2 replicas (tasks 0 to 1)"),
        "{e}"
    );
    let e = job_error("tasks = { 0 = { priority = 5 } }");
    assert!(e.contains("error: unknown field `priority` in the override of task 0 (only task fields may be overridden)"), "{e}");
    assert!(job_error("tasks = { leader = {} }").contains("`leader` is not a task index"));
    assert!(job_error("tasks = { 0 = { command = '' } }")
        .contains("task 0: job \"j\" has no command: set `command`"));
}

#[test]
fn runtime_substitutions_stay_literal() {
    let j = job("args = ['--port=%port%', '%task_index%', 'date +%s%H%M'] env = { WHO = '%user%@%cell%/%job%' }");
    assert_eq!(
        j.task.args,
        ["--port=%port%", "%task_index%", "date +%s%H%M"]
    );
    assert_eq!(j.task.env["WHO"], "%user%@%cell%/%job%");
    let e = job_error("args = ['%task_idx%']");
    assert!(
        e.contains("error: unknown runtime substitution `%task_idx%`"),
        "{e}"
    );
    assert!(e.contains("hint: did you mean `%task_index%`?"), "{e}");
    assert!(job_error("env = { P = '%prot%' }").contains("did you mean `%port%`?"));
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn imports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "lib/base.bcl", "small = { cpu = 100m ram = 32Mi }\nsvc = { command = '/srv/x' resources = small }\njob template_only = svc { replicas = 9 }");
    write(
        d,
        "lib/more.bcl",
        "import 'base.bcl'\nbig = small { ram = 1Gi }",
    );
    write(d, "main.bcl", "import 'lib/base.bcl' as lib\nimport 'lib/more.bcl' as more\njob web = lib.svc { replicas = 2 resources = more.big }");
    let l = bcl::load_file(&d.join("main.bcl")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.jobs.len(), 1, "jobs of imported files are not submitted");
    assert_eq!(l.jobs[0].task.resources, Resources::new(100, 1 << 30));
    assert_eq!(l.jobs[0].task.command, "/srv/x");

    write(
        d,
        "flat.bcl",
        "import 'lib/base.bcl'\njob web = svc { replicas = 1 }",
    );
    assert_eq!(
        bcl::load_file(&d.join("flat.bcl")).unwrap().jobs[0]
            .task
            .command,
        "/srv/x"
    );
    write(d, "clash.bcl", "small = 1\nimport 'lib/base.bcl'");
    let e = bcl::load_file(&d.join("clash.bcl"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "clash.bcl:2:8: error: this import defines `small`, which is already defined at line 1"
        ),
        "{e}"
    );

    write(d, "a.bcl", "import 'b.bcl'\nx = 1");
    write(d, "b.bcl", "import 'a.bcl'\ny = 1");
    let e = bcl::load_file(&d.join("a.bcl")).unwrap_err().to_string();
    assert!(e.contains("b.bcl:1:8: error: import cycle: "), "{e}");
    assert!(e.contains("a.bcl -> ") && e.contains("b.bcl -> "), "{e}");
    write(d, "self.bcl", "import 'self.bcl'");
    assert!(bcl::load_file(&d.join("self.bcl"))
        .unwrap_err()
        .to_string()
        .contains("import cycle"));

    write(d, "missing.bcl", "import 'nope.bcl'");
    let e = bcl::load_file(&d.join("missing.bcl"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.bcl:1:8: error: cannot import ") && e.contains("nope.bcl"),
        "{e}"
    );
    assert!(
        e.contains("hint: import paths are relative to the importing file's directory"),
        "{e}"
    );

    write(d, "broken.bcl", "x = = 1");
    write(d, "uses_broken.bcl", "import 'broken.bcl'");
    let e = bcl::load_file(&d.join("uses_broken.bcl"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("broken.bcl:1:5: error: expected a value, found `=`"),
        "{e}"
    );

    // load_str resolves imports relative to the directory of the name it is given.
    let l = load_str(
        "import 'lib/base.bcl' as lib\njob j = lib.svc {}",
        &d.join("virtual.bcl").display().to_string(),
    )
    .unwrap();
    assert_eq!(l.jobs[0].name, "j");
}

#[test]
fn import_depth_and_size_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..30 {
        write(
            d,
            &format!("f{i}.bcl"),
            &format!("import 'f{}.bcl' as next\nx{i} = 1", i + 1),
        );
    }
    write(d, "f30.bcl", "end = 1");
    let e = bcl::load_file(&d.join("f0.bcl")).unwrap_err().to_string();
    assert!(
        e.contains("error: imports are nested more than 16 files deep"),
        "{e}"
    );

    write(
        d,
        "huge.bcl",
        &format!("x = '{}'", "a".repeat(bcl::SOURCE_FILE_BYTES_MAX)),
    );
    let e = bcl::load_file(&d.join("huge.bcl")).unwrap_err().to_string();
    assert!(e.contains("the most a BCL file may have is 1048576"), "{e}");
    write(d, "imports_huge.bcl", "import 'huge.bcl'");
    assert!(bcl::load_file(&d.join("imports_huge.bcl"))
        .unwrap_err()
        .to_string()
        .contains("imports_huge.bcl:1:8"));
    assert!(load_str(&" ".repeat(bcl::SOURCE_FILE_BYTES_MAX + 1), "big.bcl").is_err());

    let e = bcl::load_file(d).unwrap_err().to_string();
    assert!(e.ends_with("is not a regular file"), "{e}");
    write(d, "dir_import.bcl", "import 'lib'");
    std::fs::create_dir_all(d.join("lib")).unwrap();
    assert!(bcl::load_file(&d.join("dir_import.bcl"))
        .unwrap_err()
        .to_string()
        .contains("is not a regular file"));
    let e = bcl::load_file(&d.join("absent.bcl")).unwrap_err();
    assert_eq!(e.items[0].line, 0);
    assert!(
        e.to_string().contains("absent.bcl: error: cannot read"),
        "{e}"
    );
}

#[test]
fn several_jobs_in_one_file() {
    let l = load(&format!(
        "job b = {{ {RUN} }}\njob a = {{ {RUN} }}\njob 'web-frontend' = {{ {RUN} }}"
    ));
    let names: Vec<&str> = l.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["b", "a", "web-frontend"]);
    let e = error(&format!("job a = {{ {RUN} }}\njob a = {{ {RUN} }}"));
    assert!(
        e.contains("t.bcl:2:5: error: `a` is already defined at line 1"),
        "{e}"
    );
}

#[test]
fn allocs_and_alloc_sets() {
    let l = load(&format!(
        "alloc set = {{ replicas = 3 priority = 'production' resources = {{ cpu = 1 ram = 1Gi }} runtime = {{ cell = 'c1' }} }}
         job a = {{ {RUN} alloc = 'set' replicas = 3 }}"
    ));
    assert_eq!(l.allocs[0].set.name, "set");
    assert_eq!(l.allocs[0].set.replicas, 3);
    assert_eq!(l.allocs[0].set.priority, 200);
    assert_eq!(l.allocs[0].cell.as_deref(), Some("c1"));
    assert_eq!(l.job_extras["a"].alloc.as_deref(), Some("set"));

    let e = error(&format!("alloc shared = {{ resources = {{ cpu = 1 ram = 1Gi }} }}\njob a = {{ {RUN} alloc = 'sharde' }}"));
    assert!(
        e.contains(
            "t.bcl:2:5: error: job `a` names alloc `sharde`, which is not declared in this file"
        ),
        "{e}"
    );
    assert!(e.contains("hint: did you mean `shared`?"), "{e}");
    let e = error(&format!("alloc s = {{ replicas = 1 resources = {{ cpu = 1 ram = 1Gi }} }}\njob a = {{ {RUN} alloc = 's' replicas = 2 }}"));
    assert!(
        e.contains("job `a` has 2 replicas but alloc `s` has only 1 instances"),
        "{e}"
    );
    let e = error(&format!(
        "alloc s = {{ resources = {{ cpu = 150m ram = 1Gi }} }}\njob a = {{ {RUN} alloc = 's' }}\njob b = {{ {RUN} alloc = 's' }}"
    ));
    assert!(e.contains("t.bcl:1:7: error: the tasks placed in alloc `s` need cpu=200m ram=2Mi disk=0B per instance, more than it reserves (cpu=150m ram=1Gi disk=0B) in cpu"), "{e}");
    assert!(error("alloc s = { replicas = 2 }").contains("alloc `s` reserves no cpu or no ram"));
    assert!(error("alloc s = { command = 'x' }").contains("unknown field `command` in alloc `s`"));
}

#[test]
fn every_job_field_maps_onto_the_job_spec() {
    let l = load(
        "job full = {
           owner = 'alice' priority = 250 replicas = 4
           command = '/srv/full' args = { port = '%port%' verbose = true }
           env = { A = 'x' N = 3 }
           resources = { cpu = 1.5 ram = 2Gi disk = 10G gpu = 1 }
           ports = ['http', 'admin']
           constraints = [
             { attribute = 'os', value = 'linux' },
             { attribute = 'kernel', op = 'version>=', value = '5.10' },
             { attribute = 'zone', values = ['a', 'b'] },
             { attribute = 'rack', op = '!=', value = 'r9', soft = true },
             { attribute = 'ssd' },
             { attribute = 'host', op = '=~', value = 'web-[0-9]+' },
           ]
           appclass = 'batch' type = 'batch'
           restart = { max_attempts = 7 interval = 2m delay = 3s }
           runtime = { cell = 'ic' }
         }",
    );
    let j = &l.jobs[0];
    assert_eq!(
        (j.owner.as_str(), j.priority, j.replicas),
        ("alice", 250, 4)
    );
    assert_eq!(j.task.args, ["--port=%port%", "--verbose=true"]);
    assert_eq!(j.task.env["N"], "3");
    assert_eq!(
        j.task.resources,
        Resources {
            cpu_millis: 1500,
            ram_bytes: 2 << 30,
            disk_bytes: 10_000_000_000,
            gpus: 1
        }
    );
    assert_eq!(j.task.ports, ["http", "admin"]);
    let ops: Vec<(ConstraintOp, bool)> = j.constraints.iter().map(|c| (c.op, c.soft)).collect();
    assert_eq!(
        ops,
        [
            (ConstraintOp::Eq, false),
            (ConstraintOp::VersionGe, false),
            (ConstraintOp::In, false),
            (ConstraintOp::Ne, true),
            (ConstraintOp::Exists, false),
            (ConstraintOp::Regex, false),
        ]
    );
    assert_eq!(j.constraints[2].values, ["a", "b"]);
    assert_eq!((j.app_class, j.job_type), (AppClass::Batch, JobType::Batch));
    assert_eq!(
        (
            j.restart.max_attempts,
            j.restart.interval_s,
            j.restart.delay_ms
        ),
        (7, 120, 3000)
    );
    assert_eq!(job("priority = 'monitoring'").priority, 300);
    assert_eq!(
        job("").owner,
        "",
        "an unset owner stays empty for the CLI to fill in"
    );
    let mut l = load(&format!(
        "job a = {{ {RUN} }}\njob b = {{ {RUN} owner = 'bob' }}"
    ));
    l.fill_owner("alice");
    assert_eq!(
        (l.jobs[0].owner.as_str(), l.jobs[1].owner.as_str()),
        ("alice", "bob")
    );
    let d = job("");
    assert_eq!(
        (d.replicas, d.priority, d.job_type, d.app_class),
        (1, 0, JobType::Service, AppClass::LatencySensitive)
    );
}

#[test]
fn unknown_and_misused_fields_are_errors() {
    assert_eq!(
        job_error("replicaz = 3"),
        "t.bcl:2:15: error: unknown field `replicaz` in job `j`\n 2 | job j = run { replicaz = 3 }\n   |               ^^^^^^^^\n  hint: did you mean `replicas`?"
    );
    assert!(job_error("name = 'x'").contains("hint: a job's name comes from `job NAME = ...`"));
    assert!(job_error("resources = { cpu = 1 ram = 1Mi mem = 1 }")
        .contains("unknown field `mem` in `resources`"));
    assert!(job_error("binary = '/bin/x'")
        .contains("`binary` and `command` are the same field; set only one"));
    let e = job_error("appclass = 'latency-sensitive'");
    assert!(
        e.contains(
            "`appclass` must be one of 'latency_sensitive', 'batch', not \"latency-sensitive\""
        ),
        "{e}"
    );
    assert!(e.contains("hint: did you mean `latency_sensitive`?"), "{e}");
    assert!(job_error("type = 3")
        .contains("`type` must be one of 'service', 'batch', but this is a plain number"));
    assert!(job_error("priority = 'prod'").contains("hint: did you mean `production`?"));
    assert!(job_error("owner = 3").contains("`owner` must be a string, but this is a plain number"));
    assert!(job_error("ports = ['a b']").contains("port name \"a b\" is invalid"));
    assert!(job_error("ports = ['a', 'a']").contains("port `a` is listed twice"));
    assert!(
        job_error("env = { 'A=B' = 1 }").contains("\"A=B\" cannot name an environment variable")
    );
    assert!(
        job_error("args = 'x'").contains("`args` must be a list or a tuple, but this is a string")
    );
    assert!(
        job_error("constraints = [{ op = '==' }]").contains("this constraint names no `attribute`")
    );
    let e = job_error("constraints = [{ attribute = 'a', op = 'eqq', value = 1 }]");
    assert!(e.contains("\"eqq\" is not a constraint operator"), "{e}");
    assert!(e.contains("hint: did you mean `eq`?"), "{e}");
    assert!(
        job_error("constraints = [{ attribute = 'a', value = 1, values = [2] }]")
            .contains("set `value` or `values`, not both")
    );
    assert!(
        job_error("constraints = [{ attribute = 'a', op = '=~', value = '(' }]")
            .contains("invalid regular expression")
    );
    assert!(job_error("constraints = [{ attribute = 'a', op = 'in' }]")
        .contains("needs at least one value"));
    assert!(job_error("restart = { attempts = 1 }").contains("hint: did you mean `max_attempts`?"));
    assert!(job_error("restart = { interval = 1500ms }")
        .contains("the restart interval must be whole seconds"));
    assert!(error("job j = 3")
        .contains("job `j` must be a tuple `{ ... }`, but this is a plain number"));
}

#[test]
fn job_spec_validation_is_reported_at_the_job() {
    assert_eq!(
        error("job web = { resources = { cpu = 1 ram = 1Gi } }"),
        "t.bcl:1:5: error: job \"web\" has no command: set `command`\n 1 | job web = { resources = { cpu = 1 ram = 1Gi } }\n   |     ^^^"
    );
    assert!(error("job web = { command = 'x' }")
        .contains("job \"web\" requests no cpu or no ram: every task needs both (for example cpu = 100m, ram = 64Mi)"));
    assert!(job_error("replicas = 100001").contains("asks for 100001 replicas; the most is 100000"));
    assert!(job_error("owner = 'a b'").contains("owner \"a b\" is invalid"));
    assert!(error(&format!("job '../x' = {{ {RUN} }}")).contains("job name \"../x\" is invalid"));
}

#[test]
fn every_problem_of_every_job_is_reported() {
    let d = load_str(
        &format!(
            "job a = {{ {RUN} replicaz = 1 priority = 'x' }}\njob b = {{ {RUN} typ = 'batch' }}"
        ),
        "t.bcl",
    )
    .unwrap_err();
    assert_eq!(d.items.len(), 3);
    assert_eq!(
        (d.items[2].line, d.items[2].col, d.items[2].width),
        (2, 70, 3)
    );
    assert_eq!(
        d.items[2].source_line,
        format!("job b = {{ {RUN} typ = 'batch' }}")
    );
    assert_eq!(d.items[2].hint.as_deref(), Some("did you mean `type`?"));
    assert!(d.to_string().ends_with("\n\n3 errors"));
}

#[test]
fn evaluation_is_bounded() {
    // A value that doubles at each step: merging it with itself would take 2^30 steps.
    let mut src = String::from("t0 = { a = 1 }\n");
    for i in 1..=30 {
        src.push_str(&format!("t{i} = {{ a = t{p}, b = t{p} }}\n", p = i - 1));
    }
    src.push_str("x = t30 { a = t29 { a = t30 } }\n");
    let e = error(&src);
    assert!(
        e.contains("error: evaluation took more than 1000000 steps")
            || e.contains("nested more than"),
        "{e}"
    );

    let mut src = String::from("s0 = 'xxxxxxxx'\n");
    for i in 1..=40 {
        src.push_str(&format!("s{i} = s{p} + s{p}\n", p = i - 1));
    }
    assert!(error(&src).contains("bytes long; the most is 262144"));
    // Many large strings: each is within bounds, together they exhaust the step budget.
    let mut src = String::from("s0 = 'xxxxxxxx'\n");
    for i in 1..=14 {
        src.push_str(&format!("s{i} = s{p} + s{p}\n", p = i - 1));
    }
    for i in 0..5000 {
        src.push_str(&format!("c{i} = s14 + s14\n"));
    }
    assert!(error(&src).contains("evaluation took more than 1000000 steps"));
    let mut src = String::from("l0 = [1, 2, 3, 4]\n");
    for i in 1..=40 {
        src.push_str(&format!("l{i} = l{p} + l{p}\n", p = i - 1));
    }
    assert!(error(&src).contains("items; the most is 10000"));
    let mut src = String::from("v0 = 1\n");
    for i in 1..=40 {
        src.push_str(&format!("v{i} = [v{}]\n", i - 1));
    }
    assert!(error(&src).contains("values are nested more than 32 levels deep"));
    assert!(
        error(&format!("x = {}1{}", "[".repeat(200), "]".repeat(200)))
            .contains("nested more than 64 levels deep")
    );
    // A long chain is one level however long: sums of many terms are fine.
    let l = load(&format!(
        "n = 1{}\njob j = {{ {RUN} replicas = n }}",
        " + 1".repeat(5000)
    ));
    assert_eq!(l.jobs[0].replicas, 5001);
    assert!(error(&format!("x = {}", "9".repeat(400))).contains("this number is too large"));
    assert!(error("x = 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T * 1T")
        .contains("cannot multiply two quantities"));
    assert!(error(&format!("x = {}", "1e9 * ".repeat(40) + "1")).contains("unknown unit `e`"));
    let long_list = format!("x = [{}]", "1,".repeat(bcl::LIST_LEN_MAX + 1));
    assert!(error(&long_list).contains("this list would have 10001 items; the most is 10000"));
    let wide: String = (0..=bcl::TUPLE_FIELDS_MAX)
        .map(|i| format!("f{i} = 1 "))
        .collect();
    assert!(error(&format!("x = {{ {wide} }}"))
        .contains("this tuple would have 10001 fields; the most is 10000"));
    // Wide values at the bounds: lookups and merges are by key index, not by scanning.
    let wide: String = (0..bcl::TUPLE_FIELDS_MAX)
        .map(|i| format!("f{i} = {i} "))
        .collect();
    let ports: String = (0..bcl::LIST_LEN_MAX).map(|i| format!("'p{i}',")).collect();
    let l = load(&format!(
        "t = {{ {wide} }}\nu = t {{ {wide} }}\njob j = {{ {RUN} replicas = u.f9999 ports = [{ports}] }}"
    ));
    assert_eq!(
        (l.jobs[0].replicas, l.jobs[0].task.ports.len()),
        (9999, bcl::LIST_LEN_MAX)
    );
    // Every task overriding a huge list would build 10k copies of it.
    let args: String = (0..bcl::LIST_LEN_MAX).map(|i| format!("'a{i}',")).collect();
    let overrides: String = (0..bcl::TUPLE_FIELDS_MAX)
        .map(|i| format!("{i} = {{ env = {{ I = '{i}' }} }} "))
        .collect();
    let e = error(&format!(
        "job j = {{ {RUN} replicas = 10000 args = [{args}] tasks = {{ {overrides} }} }}"
    ));
    assert!(e.contains("checking took more than 1000000 steps"), "{e}");
    assert!(
        !e.contains("errors"),
        "one budget error, not one per task: {e}"
    );
    let big = format!("x = {} 1", "1000000000 * ".repeat(40));
    assert!(error(&big).contains("the result of this arithmetic is too large"));
}

#[test]
fn diagnostics_serialize_for_json_output() {
    let d = load_str("job j = { replicaz = 1 }", "t.bcl").unwrap_err();
    let json = serde_json::to_value(&d).unwrap();
    let first = &json["items"][0];
    assert_eq!(first["file"], "t.bcl");
    assert_eq!(
        (first["line"].as_u64(), first["col"].as_u64()),
        (Some(1), Some(11))
    );
    assert_eq!(first["message"], "unknown field `replicaz` in job `j`");
    assert_eq!(first["hint"], "did you mean `replicas`?");
}
