//! The unit's own commands, run as systemd runs them: `ExecStartPre` checks, `ExecStart` speaks
//! the notify protocol (READY, WATCHDOG, RELOADING, STOPPING) on $NOTIFY_SOCKET, `ExecReload`
//! checks and sends HUP. No systemd is needed: the test plays the service manager.

use super::common::{BIN, Env};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

/// The values of `key=` lines in the shipped unit.
fn unit_lines(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/phananh.service"
    ))
    .unwrap();
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.replace("/usr/bin/phananh", BIN))
        .collect()
}

fn wait_for_message(sock: &UnixDatagram, needle: &str, seen: &mut Vec<String>) -> bool {
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.lines().any(|l| l == needle) {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_unit_commands_work_as_systemd_runs_them() {
    let env = Env::new("", "");
    let config_env = unit_lines("Environment");
    assert_eq!(
        config_env,
        vec!["PHANANH_CONFIG=/etc/phananh/phananh.toml".to_string()]
    );
    assert_eq!(unit_lines("Type"), vec!["notify"]);
    let sh = |cmd: &str, pid: Option<u32>| {
        let cmd = cmd.replace("$MAINPID", &pid.map(|p| p.to_string()).unwrap_or_default());
        Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("PHANANH_CONFIG", &env.config)
            .output()
            .unwrap()
    };

    for pre in unit_lines("ExecStartPre") {
        let out = sh(&pre, None);
        assert!(
            out.status.success(),
            "{pre}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = unit_lines("ExecStart").remove(0);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {start}"))
        .env("PHANANH_CONFIG", &env.config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::fs::File::create(env.path("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    assert!(
        wait_for_message(&sock, "READY=1", &mut seen),
        "{seen:?}\n{}",
        env.log()
    );
    assert!(wait_for_message(&sock, "WATCHDOG=1", &mut seen), "{seen:?}");

    for reload in unit_lines("ExecReload") {
        let out = sh(&reload, Some(child.id()));
        assert!(
            out.status.success(),
            "{reload}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(
        wait_for_message(&sock, "RELOADING=1", &mut seen),
        "{seen:?}"
    );
    assert!(wait_for_message(&sock, "READY=1", &mut seen), "{seen:?}");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_for_message(&sock, "STOPPING=1", &mut seen), "{seen:?}");
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", env.log());
}
