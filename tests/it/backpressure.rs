//! A writer that cannot commit makes intake wait: the queue holds at most its capacity, callers
//! block instead of piling submissions up in memory, and everything goes in once it can.

use phananh::channels::email::normalize;
use phananh::config::EmailConfig;
use phananh::pipeline::sha256_hex;
use phananh::store::{Outcome, Store, StoreSettings, Submission, SubmissionBody};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn submission(n: usize) -> Submission {
    let raw = super::common::message(n);
    let (draft, _) = normalize(
        &raw,
        &EmailConfig::default(),
        chrono_tz::Asia::Ho_Chi_Minh,
        "x",
    )
    .unwrap();
    Submission {
        channel: "mail".into(),
        kind: "maildir".into(),
        raw_sha256: sha256_hex(&raw),
        raw,
        source_ref: None,
        received_at: chrono::Utc::now().fixed_offset(),
        body: SubmissionBody::Report(Box::new(draft)),
        acknowledge: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_writer_holds_intake_at_the_queue_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("phananh.db");
    let store = Store::open(StoreSettings {
        db_path: db_path.clone(),
        queue_capacity: 4,
        batch_max: 2,
        tracking_prefix: "PA".into(),
        tz: chrono_tz::Asia::Ho_Chi_Minh,
        same_text_window: Duration::from_secs(3600),
        same_photo_window: Duration::from_secs(3600),
        photo_distance: 4,
        similar: phananh::pipeline::similar::Policy {
            window_ms: 72 * 3_600_000,
            distance_m: 150.0,
            score_near: 0.1,
            score: 0.3,
        },
        bounce_suppress_for: Duration::from_secs(3600),
        sinks: vec![phananh::store::SinkRoute::all("spool")].into(),
        units: vec![],
    })
    .unwrap();

    // Another process-like connection holds the write lock, as a long backup or a stuck disk would.
    let blocker = rusqlite::Connection::open(&db_path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..50 {
        let store = store.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let r = store.submit(submission(n)).await.unwrap();
            done.fetch_add(1, Ordering::SeqCst);
            r
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Nothing is acknowledged while nothing is durable, and the queue is full, not growing.
    assert_eq!(done.load(Ordering::SeqCst), 0);
    assert_eq!(store.queue_depth(), 4);

    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    let mut created = 0;
    for t in tasks {
        if let Outcome::Created { .. } = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap()
            .outcome
        {
            created += 1;
        }
    }
    assert_eq!(created, 50);
    assert_eq!(store.queue_depth(), 0);
    store.close().await;
}
