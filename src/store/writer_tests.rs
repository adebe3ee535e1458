//! The writer's two ways through a batch: straight in when every command succeeds, and command by
//! command (page item by page item) when one fails, so a bad one never costs the others.

use super::feeds::FeedCursor;
use super::writer::{Command, apply};
use super::{Outcome, Receipt, StoreError, StoreSettings, Submission, SubmissionBody};
use crate::pipeline::Draft;
use crate::report::Reporter;
use tokio::sync::oneshot;

fn settings(dir: &std::path::Path) -> StoreSettings {
    StoreSettings {
        db_path: dir.join("phananh.db"),
        queue_capacity: 16,
        batch_max: 16,
        tracking_prefix: "HUE".into(),
        tz: chrono_tz::Asia::Ho_Chi_Minh,
        same_text_window: std::time::Duration::from_secs(3600),
        same_photo_window: std::time::Duration::from_secs(3600),
        photo_distance: 4,
        similar: crate::pipeline::similar::Policy {
            window_ms: 3_600_000,
            distance_m: 150.0,
            score_near: 0.1,
            score: 0.3,
        },
        bounce_suppress_for: std::time::Duration::from_secs(3600),
        sinks: vec![crate::store::SinkRoute::all("spool")].into(),
        units: vec![],
    }
}

fn draft(id: &str, text: &str) -> Box<Draft> {
    Box::new(Draft {
        reporter: Reporter::default(),
        ..Draft::from_text(id, "", text, "chua_phan_loai")
    })
}

fn submission(body: SubmissionBody) -> Submission {
    Submission {
        channel: "portal".into(),
        kind: "feed".into(),
        raw: b"{}".to_vec(),
        raw_sha256: crate::pipeline::sha256_hex(format!("{body:?}").as_bytes()),
        source_ref: None,
        received_at: chrono::Utc::now().fixed_offset(),
        body,
        acknowledge: false,
    }
}

fn item(id: &str) -> Submission {
    submission(SubmissionBody::FeedItem {
        key: id.into(),
        draft: draft(id, &format!("ổ gà số {id}")),
    })
}

/// An item that fails in the store after its inbox row is written (a trigger refuses its
/// report), so a failed attempt that was not rolled back would show.
fn failing() -> Submission {
    submission(SubmissionBody::FeedItem {
        key: "boom".into(),
        draft: draft("boom", "boom"),
    })
}

fn open(dir: &std::path::Path) -> (rusqlite::Connection, StoreSettings) {
    let settings = settings(dir);
    let mut conn = super::open_writer_connection(&settings.db_path).unwrap();
    super::schema::migrations().to_latest(&mut conn).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON reports WHEN NEW.description = 'boom'
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    (conn, settings)
}

fn portal_cursor(next_page: u32) -> FeedCursor {
    FeedCursor {
        channel: "portal".into(),
        done_until: "2026-11-28T00:00:00+07:00".into(),
        pending_end: None,
        next_page,
        page_size: 500,
    }
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

type Answer = oneshot::Receiver<Result<Receipt, StoreError>>;

fn submit(s: Submission) -> (Command, Answer) {
    let (tx, rx) = oneshot::channel();
    (Command::Submit(Box::new(s), tx), rx)
}

#[test]
fn a_clean_batch_goes_in_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut conn, settings) = open(dir.path());
    let (a, mut ra) = submit(item("1"));
    let (b, mut rb) = submit(item("2"));
    assert!(apply(
        &mut conn,
        &settings,
        vec![a, b],
        &mut Default::default()
    ));
    for r in [ra.try_recv(), rb.try_recv()] {
        assert!(matches!(
            r.unwrap().unwrap().outcome,
            Outcome::Created { .. }
        ));
    }
    assert_eq!(count(&conn, "SELECT count(*) FROM reports"), 2);
    assert_eq!(count(&conn, "SELECT count(*) FROM outbox"), 2);
}

#[test]
fn one_failing_command_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (mut conn, settings) = open(dir.path());
    let (a, mut ra) = submit(item("1"));
    let (bad, mut rbad) = submit(failing());
    let (b, mut rb) = submit(item("2"));
    assert!(apply(
        &mut conn,
        &settings,
        vec![a, bad, b],
        &mut Default::default()
    ));
    let err = rbad.try_recv().unwrap().unwrap_err();
    assert!(err.to_string().contains("refused by the test"), "{err}");
    let created = |r: Result<Result<Receipt, StoreError>, _>| match r.unwrap().unwrap().outcome {
        Outcome::Created { report } => report.id,
        other => panic!("{other:?}"),
    };
    let ids = [created(ra.try_recv()), created(rb.try_recv())];
    // What the callers were told is what is stored, once: the first attempt left nothing behind.
    assert_eq!(count(&conn, "SELECT count(*) FROM reports"), 2);
    assert_eq!(count(&conn, "SELECT count(*) FROM inbox"), 2);
    assert_eq!(count(&conn, "SELECT count(*) FROM outbox"), 2);
    for id in ids {
        let n: i64 = conn
            .query_row("SELECT count(*) FROM reports WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1, "{id}");
    }
}

#[test]
fn a_page_with_a_failing_item_quarantines_it_and_moves_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (mut conn, settings) = open(dir.path());
    let cursor = portal_cursor(1);
    let (tx, mut rx) = oneshot::channel();
    let page = Command::Page(vec![item("1"), failing(), item("2")], cursor.clone(), tx);
    assert!(apply(
        &mut conn,
        &settings,
        vec![page],
        &mut Default::default()
    ));
    let receipts = rx.try_recv().unwrap().unwrap();
    assert!(matches!(receipts[0].outcome, Outcome::Created { .. }));
    assert!(
        matches!(&receipts[1].outcome, Outcome::Quarantined { reason } if reason.contains("refused by the test")),
        "{:?}",
        receipts[1]
    );
    assert!(matches!(receipts[2].outcome, Outcome::Created { .. }));
    assert_eq!(count(&conn, "SELECT count(*) FROM reports"), 2);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM inbox WHERE status = 'quarantined'"
        ),
        1
    );
    assert_eq!(super::feeds::cursor(&conn, "portal").unwrap(), Some(cursor));
}

#[test]
fn a_full_disk_fails_the_page_keeps_the_cursor_and_quarantines_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut conn, settings) = open(dir.path());
    let cursor = portal_cursor(2);
    let big = |id: &str| Submission {
        raw: vec![b'x'; 64 * 1024],
        ..item(id)
    };
    // SQLite's own size limit stands in for the disk: the file cannot grow by another page.
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "max_page_count", pages).unwrap();
    let (tx, mut rx) = oneshot::channel();
    let page = Command::Page(vec![item("1"), big("2"), item("3")], cursor.clone(), tx);
    let mut seen = super::writer::Observed::default();
    assert!(!apply(&mut conn, &settings, vec![page], &mut seen));
    let err = rx.try_recv().unwrap().unwrap_err();
    assert!(err.to_string().contains("full"), "{err}");
    assert_eq!(
        count(&conn, "SELECT count(*) FROM inbox"),
        0,
        "nothing quarantined"
    );
    assert_eq!(super::feeds::cursor(&conn, "portal").unwrap(), None);
    assert!(
        seen.storage().is_some_and(|e| e.contains("full")),
        "{seen:?}"
    );

    // Space is back: the same page goes in whole, and the writer says so.
    conn.pragma_update(None, "max_page_count", 1_000_000)
        .unwrap();
    let (tx, mut rx) = oneshot::channel();
    let page = Command::Page(vec![item("1"), big("2"), item("3")], cursor.clone(), tx);
    let mut seen = super::writer::Observed::default();
    assert!(apply(&mut conn, &settings, vec![page], &mut seen));
    assert_eq!(rx.try_recv().unwrap().unwrap().len(), 3);
    assert_eq!(count(&conn, "SELECT count(*) FROM reports"), 3);
    assert_eq!(super::feeds::cursor(&conn, "portal").unwrap(), Some(cursor));
    assert!(seen.storage().is_none());
}

#[test]
fn a_batch_rolled_back_by_a_full_disk_stores_nothing_and_says_so_to_every_caller() {
    // SQLite rolls the whole transaction back on SQLITE_FULL: an item after the failing one must
    // not then run outside any transaction and be stored while its caller hears it was not.
    let dir = tempfile::tempdir().unwrap();
    let (mut conn, settings) = open(dir.path());
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "max_page_count", pages).unwrap();
    let (a, mut ra) = submit(item("1"));
    let (big, mut rbig) = submit(Submission {
        raw: vec![b'x'; 64 * 1024],
        ..item("2")
    });
    let (c, mut rc) = submit(item("3"));
    let mut seen = super::writer::Observed::default();
    assert!(!apply(&mut conn, &settings, vec![a, big, c], &mut seen));
    for r in [ra.try_recv(), rbig.try_recv(), rc.try_recv()] {
        let err = r.unwrap().unwrap_err().to_string();
        assert!(err.contains("full"), "{err}");
    }
    assert!(conn.is_autocommit());
    assert_eq!(count(&conn, "SELECT count(*) FROM inbox"), 0);
    assert_eq!(count(&conn, "SELECT count(*) FROM reports"), 0);
}
