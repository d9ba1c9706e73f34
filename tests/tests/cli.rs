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
