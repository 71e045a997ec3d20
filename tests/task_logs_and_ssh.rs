//! `borg logs` and `borg ssh` against a real cell: the CLI goes through the master
//! (`TaskAccessService`), which lets in the job's owner or an admin and relays to the task's
//! borglet with the cluster token; the borglet itself obeys nobody else.

mod support;

use borg_proto::v1;
use borg_proto::v1::borglet_service_client::BorgletServiceClient;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::{wait_for, TestCell, ADMIN_USER, BORG};

const JOB: &str = "job talk = {
  command = '/bin/sh'
  args = ['-c', 'echo hello-%task_index%; echo oops >&2; exec sleep 100000']
  replicas = 1
  priority = 100
  resources = { cpu = 100m ram = 32Mi }
}
";

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `borg ARGS` as the admin with `input` on stdin.
fn borg_with_input(cell: &TestCell, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BORG)
        .arg("--master")
        .arg(cell.master_list())
        .args(args)
        .env("BORG_TOKEN", &cell.admin_token)
        .env("BORG_USER", ADMIN_USER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run borg CLI");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("write the session's input");
    child.wait_with_output().expect("wait for borg CLI")
}

/// The code of a Poll sent straight to the borglet at `address` without any token.
fn poll_without_token(address: &str, machine: &str) -> tonic::Code {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut client = BorgletServiceClient::connect(format!("http://{address}"))
            .await
            .expect("connect to the borglet");
        let request = v1::PollRequest {
            machine: machine.into(),
            desired: vec![],
            master_index: 0,
            ..Default::default()
        };
        match client.poll(request).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    })
}

#[test]
fn logs_and_ssh_reach_a_running_task_through_the_master_for_its_owner_only() {
    let cell = TestCell::full(3);
    let file = cell.write_file("talk.bcl", JOB);
    let run = cell.borg(&["job", "run", file.to_str().unwrap()]);
    assert!(run.status.success(), "{}\n{}", stderr(&run), cell.logs());

    let stdout = wait_for("the task's stdout", Duration::from_secs(30), || {
        let out = cell.borg(&["logs", "talk/0"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains("hello-0")).then_some(text)
    });
    assert_eq!(stdout, "hello-0\n");
    let stderr_log = cell.borg(&["logs", "talk/0", "--stderr"]);
    assert_eq!(String::from_utf8_lossy(&stderr_log.stdout), "oops\n");

    // The owner (the admin submitted it) runs a command inside the task's cgroup.
    let inside = cell.borg(&["ssh", "talk/0", "--", "cat", "/proc/self/cgroup"]);
    assert!(inside.status.success(), "{}", stderr(&inside));
    let cgroups = String::from_utf8_lossy(&inside.stdout);
    assert!(
        cgroups
            .lines()
            .any(|l| l.contains(&format!("/{}/talk.0.", cell.cgroup_parent))),
        "{cgroups}"
    );
    let code = cell.borg(&["ssh", "talk/0", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code.status.code(), Some(3));

    // An interactive session: a shell on a PTY inside the task, fed by a script.
    let session = borg_with_input(
        &cell,
        &["ssh", "talk/0"],
        b"echo hi-from-$((40+2)); exit 3\n",
    );
    let printed = String::from_utf8_lossy(&session.stdout);
    assert_eq!(
        session.status.code(),
        Some(3),
        "{printed}\n{}",
        stderr(&session)
    );
    assert!(printed.contains("hi-from-42"), "{printed}");
    let tty = borg_with_input(&cell, &["ssh", "-t", "talk/0", "--", "tty"], b"");
    assert!(tty.status.success(), "{}", stderr(&tty));
    assert!(
        String::from_utf8_lossy(&tty.stdout).contains("/dev/pts/"),
        "{}",
        String::from_utf8_lossy(&tty.stdout)
    );

    // Each session is an event on the task, in the replicated log.
    let kinds = wait_for(
        "the ssh sessions as task events",
        Duration::from_secs(20),
        || {
            let status = cell.borg_json(&["job", "status", "talk/0"])?;
            let kinds: Vec<String> = status["events"]
                .as_array()?
                .iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_owned))
                .collect();
            kinds
                .iter()
                .any(|k| k == "task_ssh_session")
                .then_some(kinds)
        },
    );
    assert!(kinds.iter().any(|k| k == "task_ssh_command"), "{kinds:?}");

    // Another user is refused by the master (exit 4: rejected), for commands and logs alike.
    let created = cell.borg(&["token", "create", "mallory"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let mallory = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let refused = cell.borg_as(&mallory, "mallory", &["ssh", "talk/0", "--", "true"]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("only its owner"),
        "{}",
        stderr(&refused)
    );
    let refused = cell.borg_as(&mallory, "mallory", &["logs", "talk/0"]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));

    // Nobody reaches the borglet past the master: without the cluster token it refuses.
    let machines = cell.borg_json(&["machine", "list"]).expect("machine list");
    let address = machines[0]["address"].as_str().expect("borglet address");
    assert_eq!(
        poll_without_token(address, &cell.machine),
        tonic::Code::Unauthenticated
    );

    let missing = cell.borg(&["logs", "nosuchjob/0"]);
    assert_eq!(missing.status.code(), Some(3), "not found exits 3");
    let killed = cell.borg(&["job", "kill", "talk"]);
    assert!(killed.status.success());
}
