//! The command line: the topology report, and clear errors for bad input.

use appliance_tests::run_to_end;

#[test]
fn topology_prints_the_plan_and_the_io_uring_probe() {
    let (code, out) = run_to_end(&["topology"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("shard  cpu  core"), "{out}");
    assert!(out.contains("io_uring on Linux"), "{out}");
    assert!(out.contains("msg_ring="), "{out}");
}

#[test]
fn topology_accepts_an_explicit_cpu_list() {
    let (code, out) = run_to_end(&["topology", "--cpus", "0"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 shards") || out.contains("1 shard"), "{out}");
}

#[test]
fn oversubscription_needs_no_pin() {
    let (code, out) = run_to_end(&["topology", "--shards", "64"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--no-pin"), "the error names the fix: {out}");
    let (code, out) = run_to_end(&["topology", "--shards", "64", "--no-pin"]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let (code, out) = run_to_end(&["echo", "--listen", "not-an-address"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--listen"), "{out}");
    let (code, out) = run_to_end(&["topology", "--cpus", "0-x"]);
    assert!(code == Some(1) || code == Some(2), "{out}");
    assert!(out.contains("0-x") && out.contains('x'), "{out}");
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, out) = run_to_end(&["echo", "--listen", &addr, "--shards", "1", "--no-pin"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&addr) && out.contains("cannot bind"), "{out}");
}

/// docs/operations.md: the `APPLIANCE_*` environment variables stand for
/// their flags, and like flags they win over the file. The file asks for
/// 2 shards; `APPLIANCE_SHARDS=1` gets 1. `APPLIANCE_CONFIG` names the file,
/// `APPLIANCE_ADMIN` the admin address, `APPLIANCE_LOG_FORMAT` the log
/// format.
#[test]
fn environment_variables_stand_for_their_flags() {
    let dir = appliance_tests::TempDir::new("env");
    let path = dir.path.join("appliance.toml");
    let text = "[runtime]\nshards = 2\nno_pin = true\n\n[[echo]]\nname = \"e\"\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&path, text).expect("write config");
    let mut cmd = std::process::Command::new(appliance_tests::binary());
    cmd.arg("run")
        .env("APPLIANCE_CONFIG", &path)
        .env("APPLIANCE_ADMIN", "127.0.0.1:0")
        .env("APPLIANCE_SHARDS", "1")
        .env("APPLIANCE_LOG_FORMAT", "json");
    let mut app = appliance_tests::Appliance::spawn(&mut cmd).expect("start");
    let admin = app.wait_for_addr("admin listening on").expect("the admin address from APPLIANCE_ADMIN");
    let (_, body) = appliance_tests::http_get(admin, "/status").expect("status");
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status["config"], path.to_str().expect("utf-8"), "the file from APPLIANCE_CONFIG");
    assert_eq!(status["placement"].as_array().map(Vec::len), Some(1), "APPLIANCE_SHARDS wins over the file");
    assert!(app.printed("appliance starting"), "no startup event");
    let output = app.output();
    let starting = output.lines().find(|l| l.contains("appliance starting")).expect("the startup event");
    let event: serde_json::Value =
        serde_json::from_str(starting).expect("a JSON line (APPLIANCE_LOG_FORMAT)");
    assert_eq!(event["fields"]["shards"], 1);
}
