//! A full disk under the state directory: intake stops acknowledging (webhooks answer 503, mail
//! stays in new/), `/readyz` says why, what is stored stays intact, and everything comes in once
//! space returns. The state directory is a small tmpfs, grown while the daemon runs.

use super::common::{Env, http_get, wait_for};
use super::facebook::{SECRET, env_full, post, sign};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted over a folder, unmounted on drop (after the daemon, declared later, stops).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// None where mounting is not allowed (not root); CI runs as root and sets
    /// PHANANH_TEST_MOUNT=1 so the test cannot be skipped there.
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("PHANANH_TEST_MOUNT").is_none(),
                "cannot mount a tmpfs, and PHANANH_TEST_MOUNT requires it"
            );
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A mail of about 200 KB: the database grows by a good part of a megabyte for each.
fn big_mail(n: usize) -> Vec<u8> {
    let line =
        format!("Cống thoát nước trên đường Lê Lợi số {n} bị tắc, nước tràn lên mặt đường.\r\n");
    let mut mail = super::common::message(n);
    for _ in 0..(200 * 1024 / line.len()) {
        mail.extend_from_slice(line.as_bytes());
    }
    mail
}

/// A Messenger message of about 40 KB, unique by `n`.
fn big_message(n: usize) -> Vec<u8> {
    let text = "Cống trên đường Lê Lợi bị tắc, nước tràn lên mặt đường. ".repeat(600);
    format!(
        r#"{{"object":"page","entry":[{{"id":"104200000000001","time":1788412203511,"messaging":[{{"sender":{{"id":"73100000{n:08}"}},"recipient":{{"id":"104200000000001"}},"timestamp":1788412202977,"message":{{"mid":"m_full_{n}","text":"{text}"}}}}]}}]}}"#
    )
    .into_bytes()
}

/// Takes every free block left on the filesystem, as another program filling the disk would.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

fn readyz(env: &Env) -> (u16, serde_json::Value) {
    let out = http_get(env.port, "/readyz").unwrap_or_default();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("null");
    (code, serde_json::from_str(body).unwrap_or_default())
}

#[test]
fn a_full_disk_stops_acknowledging_harms_nothing_and_resumes_when_space_returns() {
    let env = env_full("1s", "", "");
    std::fs::write(
        env.path("channels/mail.toml"),
        "kind = \"maildir\"\npath = \"../Maildir\"\nscan_interval = \"1s\"\n",
    )
    .unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(env.maildir().join(sub)).unwrap();
    }
    let Some(disk) = Tmpfs::mount(&env.path("state"), "3m") else {
        return;
    };
    let _daemon = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || readyz(&env).0 == 200),
        "{}",
        env.log()
    );
    let webhook = |n: usize| {
        let body = big_message(n);
        post(&env, &body, Some(&sign(SECRET, &body)))
    };
    assert_eq!(webhook(0), 200);

    // Mail until the disk is full: a message stays in new/ and readyz says why.
    let mut delivered = 0;
    loop {
        assert!(delivered < 40, "the disk never filled:\n{}", env.log());
        env.deliver(&format!("m{delivered}"), &big_mail(delivered));
        delivered += 1;
        let moved = wait_for(Duration::from_secs(6), || {
            env.count(&env.maildir().join("new"), "") == 0
        });
        if !moved {
            break;
        }
    }
    let full = readyz(&env);
    assert_eq!(full.0, 503, "{}", full.1);
    assert_eq!(full.1["store"]["state"], "needs_operator", "{}", full.1);
    assert!(
        full.1["store"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("full")),
        "{}",
        full.1
    );
    assert_eq!(env.count(&env.maildir().join("new"), ""), 1);

    // Another program takes what is left. A webhook is answered 200 only if it was stored (a
    // small one may still fit in the WAL's own space); the others get 503 and Meta retries them.
    fill(&env.path("state/filler"));
    let answers: Vec<(usize, u16)> = (1..=10).map(|n| (n, webhook(n))).collect();
    let refused: Vec<usize> = answers
        .iter()
        .filter(|(_, c)| *c == 503)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        answers.iter().all(|(_, c)| *c == 200 || *c == 503),
        "{answers:?}"
    );
    assert!(
        !refused.is_empty(),
        "a full disk refused nothing: {answers:?}"
    );

    // What was stored is intact and readable, and every 200 is in it.
    {
        let db = env.db();
        let ok: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let mails: i64 = db
            .query_row(
                "SELECT count(*) FROM inbox WHERE channel = 'mail'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            mails,
            delivered as i64 - 1,
            "all mail but the one waiting\n{}",
            env.log()
        );
        let webhooks: i64 = db
            .query_row("SELECT count(*) FROM inbox WHERE channel = 'fb'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(webhooks as usize, 11 - refused.len(), "{answers:?}");
    }

    // Space returns: the waiting mail comes in, the store reports healthy, Meta's retries are taken.
    std::fs::remove_file(env.path("state/filler")).unwrap();
    disk.resize("64m");
    assert!(
        wait_for(Duration::from_secs(30), || env
            .count(&env.maildir().join("new"), "")
            == 0),
        "{}",
        env.log()
    );
    for n in &refused {
        assert_eq!(webhook(*n), 200);
    }
    assert!(
        wait_for(Duration::from_secs(10), || readyz(&env).1["store"]["state"]
            == "running"),
        "{}",
        readyz(&env).1
    );
    let db = env.db();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM inbox WHERE channel = 'mail'"),
        delivered as i64
    );
    assert_eq!(
        count("SELECT count(DISTINCT external_id) FROM inbox WHERE channel = 'mail'"),
        delivered as i64,
        "each mail once"
    );
    assert_eq!(count("SELECT count(*) FROM inbox WHERE channel = 'fb'"), 11);
    assert_eq!(
        count("SELECT count(*) FROM inbox WHERE status = 'quarantined'"),
        0
    );
}
