//! The echo service end to end: the real binary on loopback, on 1, 2 and 4
//! shards, many concurrent clients, then a graceful stop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use appliance_tests::Appliance;

fn echo_roundtrips(shards: usize) {
    let n = shards.to_string();
    let mut app =
        Appliance::start(&["echo", "--listen", "127.0.0.1:0", "--shards", &n, "--no-pin"]).expect("start");
    let addr = app.wait_for_addr("echo listening on").expect("listening line");
    let clients: Vec<_> = (0..32)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                for i in 0..50u32 {
                    // Sizes from 1 byte to several receive buffers.
                    let len = 1 + ((c * 977 + i as usize * 131) % 9000);
                    let msg: Vec<u8> = (0..len).map(|k| (k as u32 ^ i ^ c as u32) as u8).collect();
                    s.write_all(&msg).expect("write");
                    let mut back = vec![0; len];
                    s.read_exact(&mut back).expect("read back");
                    if back != msg {
                        let at = back.iter().zip(&msg).position(|(a, b)| a != b).unwrap_or(0);
                        panic!("client {c} message {i} (len {len}): first difference at byte {at}");
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    app.signal(libc::SIGTERM);
    let status = app.wait_exit(Duration::from_secs(15)).expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}; output:\n{}", app.output());
}

#[test]
fn echo_on_one_shard() {
    echo_roundtrips(1);
}

#[test]
fn echo_on_two_shards() {
    echo_roundtrips(2);
}

#[test]
fn echo_on_four_shards() {
    echo_roundtrips(4);
}

#[test]
fn half_close_gets_all_data_back_then_eof() {
    let mut app =
        Appliance::start(&["echo", "--listen", "127.0.0.1:0", "--shards", "2", "--no-pin"]).expect("start");
    let addr = app.wait_for_addr("echo listening on").expect("listening line");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"last words").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.read_to_end(&mut back).expect("read to EOF");
    assert_eq!(back, b"last words");
}
