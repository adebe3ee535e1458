//! Migrations. Append only: a released migration is never edited, a new one is added.

use rusqlite_migration::{M, Migrations};

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
        -- Every inbound item, raw, as it arrived: the evidence everything else is derived from.
        CREATE TABLE inbox (
            id           INTEGER PRIMARY KEY,
            channel      TEXT NOT NULL,
            kind         TEXT NOT NULL,
            external_id  TEXT NOT NULL,
            received_at  TEXT NOT NULL,
            raw          BLOB NOT NULL,
            raw_sha256   TEXT NOT NULL,
            source_ref   TEXT,
            status       TEXT NOT NULL CHECK (status IN ('stored', 'quarantined', 'resolved')),
            reason       TEXT,
            report_id    TEXT,
            UNIQUE (channel, external_id)
        );
        CREATE INDEX inbox_status ON inbox (status, id);

        -- Personal data lives here and only here.
        CREATE TABLE reporters (
            id            INTEGER PRIMARY KEY,
            key           TEXT NOT NULL UNIQUE,
            name          TEXT,
            email         TEXT,
            phone         TEXT,
            facebook_psid TEXT,
            app_user_id   TEXT,
            created_at    TEXT NOT NULL,
            updated_at    TEXT NOT NULL
        );

        CREATE TABLE reports (
            id             TEXT PRIMARY KEY,
            tracking_code  TEXT NOT NULL UNIQUE,
            inbox_id       INTEGER NOT NULL REFERENCES inbox (id),
            channel        TEXT NOT NULL,
            kind           TEXT NOT NULL,
            external_id    TEXT NOT NULL,
            received_at    TEXT NOT NULL,
            received_ms    INTEGER NOT NULL,
            submitted_at   TEXT NOT NULL,
            reporter_id    INTEGER REFERENCES reporters (id),
            title          TEXT NOT NULL,
            description    TEXT NOT NULL,
            quoted         TEXT,
            full_text      TEXT NOT NULL,
            language       TEXT NOT NULL,
            category       TEXT NOT NULL,
            unit           TEXT,
            text_key       TEXT,
            duplicate_of   TEXT REFERENCES reports (id),
            event_json     TEXT NOT NULL
        );
        CREATE INDEX reports_same_text ON reports (reporter_id, text_key, received_ms);
        CREATE INDEX reports_received ON reports (received_ms);

        -- Written in the same transaction as the report: what is stored is forwarded.
        CREATE TABLE outbox (
            id              INTEGER PRIMARY KEY,
            event_id        TEXT NOT NULL,
            event_type      TEXT NOT NULL,
            report_id       TEXT NOT NULL REFERENCES reports (id),
            sink            TEXT NOT NULL,
            payload         TEXT NOT NULL,
            state           TEXT NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'retrying', 'delivered', 'dead')),
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL,
            last_error      TEXT,
            created_at      TEXT NOT NULL,
            delivered_at    TEXT,
            UNIQUE (event_id, sink)
        );
        CREATE INDEX outbox_due ON outbox (sink, state, next_attempt_ms, id);
        CREATE INDEX outbox_report ON outbox (sink, report_id, id);
        "#,
        ),
        // Mail written by a machine: stored with the rule that matched, never a report.
        M::up("ALTER TABLE inbox ADD COLUMN automated TEXT;"),
        // A follow-up (a reporter answering with their code) joins the report it cites.
        M::up(
            r#"
            ALTER TABLE inbox ADD COLUMN follow_up INTEGER NOT NULL DEFAULT 0;
            CREATE TABLE updates (
                id           INTEGER PRIMARY KEY,
                report_id    TEXT NOT NULL REFERENCES reports (id),
                inbox_id     INTEGER NOT NULL REFERENCES inbox (id),
                received_at  TEXT NOT NULL,
                description  TEXT NOT NULL,
                media        TEXT NOT NULL
            );
            CREATE INDEX updates_report ON updates (report_id, id);
            "#,
        ),
        // Where each IMAP channel is in each mailbox: UIDs up to last_uid are stored.
        M::up(
            r#"
            CREATE TABLE imap_cursors (
                channel     TEXT NOT NULL,
                mailbox     TEXT NOT NULL,
                uidvalidity INTEGER NOT NULL,
                last_uid    INTEGER NOT NULL,
                PRIMARY KEY (channel, mailbox)
            );
            "#,
        ),
        // Acknowledgements: at most one per report (UNIQUE), each send or suppression recorded
        // with its reason. The address is not copied here: it stays in `reporters`.
        M::up(
            r#"
            CREATE TABLE acks (
                id              INTEGER PRIMARY KEY,
                report_id       TEXT NOT NULL UNIQUE REFERENCES reports (id),
                channel         TEXT NOT NULL,
                state           TEXT NOT NULL
                                CHECK (state IN ('pending', 'sending', 'retrying', 'sent', 'suppressed', 'dead')),
                reason          TEXT,
                attempts        INTEGER NOT NULL DEFAULT 0,
                next_attempt_ms INTEGER NOT NULL,
                last_error      TEXT,
                message_id      TEXT,
                created_at      TEXT NOT NULL,
                done_at         TEXT
            );
            CREATE INDEX acks_due ON acks (channel, state, next_attempt_ms);
            CREATE INDEX acks_message_id ON acks (message_id) WHERE message_id IS NOT NULL;

            -- Addresses not to acknowledge (a bounce said they do not exist), by SHA-256 of the
            -- lowercase address, so this table holds no address.
            CREATE TABLE mail_suppressions (
                address_sha256 TEXT PRIMARY KEY,
                until_ms       INTEGER NOT NULL,
                reason         TEXT NOT NULL,
                ack_id         INTEGER REFERENCES acks (id),
                inbox_id       INTEGER REFERENCES inbox (id),
                created_at     TEXT NOT NULL
            );
            "#,
        ),
        // Messenger conversations: a sender's messages are gathered until they go quiet, then
        // become one report. The state lives here so a restart never splits or doubles one.
        M::up(
            r#"
            CREATE TABLE fb_conversations (
                id         INTEGER PRIMARY KEY,
                channel    TEXT NOT NULL,
                psid       TEXT NOT NULL,
                state      TEXT NOT NULL CHECK (state IN ('open', 'closed')),
                opened_ms  INTEGER NOT NULL,
                last_ms    INTEGER NOT NULL,
                closed_ms  INTEGER,
                -- Set when the conversation adds to a report made shortly before (an update).
                update_of  TEXT REFERENCES reports (id),
                report_id  TEXT REFERENCES reports (id),
                -- Bumped by every new or edited message: the assembler closes only what it read.
                rev        INTEGER NOT NULL DEFAULT 0
            );
            CREATE UNIQUE INDEX fb_conversations_open ON fb_conversations (channel, psid)
                WHERE state = 'open';
            CREATE INDEX fb_conversations_due ON fb_conversations (channel, state, last_ms);
            CREATE INDEX fb_conversations_sender ON fb_conversations (channel, psid, closed_ms);
            CREATE TABLE fb_fragments (
                id              INTEGER PRIMARY KEY,
                conversation_id INTEGER NOT NULL REFERENCES fb_conversations (id),
                inbox_id        INTEGER NOT NULL REFERENCES inbox (id),
                mid             TEXT NOT NULL,
                timestamp_ms    INTEGER NOT NULL,
                data            TEXT NOT NULL
            );
            CREATE INDEX fb_fragments_conversation ON fb_fragments (conversation_id, timestamp_ms);
            CREATE INDEX fb_fragments_mid ON fb_fragments (mid);
            "#,
        ),
        // Where each polled feed is: the creation window done, and a paged window in progress.
        M::up(
            r#"
            CREATE TABLE feed_cursors (
                channel        TEXT PRIMARY KEY,
                done_until     TEXT NOT NULL,
                pending_end    TEXT,
                next_page      INTEGER NOT NULL DEFAULT 1,
                -- The page size the pending page number counts in.
                page_size      INTEGER NOT NULL DEFAULT 0
            );
            "#,
        ),
        // Every stored photo, for "the same photo from another reporter": exact by sha256, near by
        // a 64-bit perceptual hash found through five indexed bands (within 4 bits, one matches).
        M::up(
            r#"
            CREATE TABLE photo_index (
                id          INTEGER PRIMARY KEY,
                report_id   TEXT NOT NULL REFERENCES reports (id),
                sha256      TEXT NOT NULL,
                phash       INTEGER,
                b0 INTEGER, b1 INTEGER, b2 INTEGER, b3 INTEGER, b4 INTEGER,
                received_ms INTEGER NOT NULL
            );
            CREATE INDEX photo_index_sha ON photo_index (sha256);
            CREATE INDEX photo_index_b0 ON photo_index (b0);
            CREATE INDEX photo_index_b1 ON photo_index (b1);
            CREATE INDEX photo_index_b2 ON photo_index (b2);
            CREATE INDEX photo_index_b3 ON photo_index (b3);
            CREATE INDEX photo_index_b4 ON photo_index (b4);
            "#,
        ),
        // A feed item finds the report it updates by its external id: without this, every item
        // scanned the whole reports table (the feed benchmark found it).
        M::up("CREATE INDEX reports_external ON reports (channel, external_id, received_ms);"),
        // A sink's undelivered rows in id order: without it, finding the next 256 rows read and
        // sorted every undelivered row, payloads included (83 ms at 50,000 waiting, 0.5 ms with).
        M::up(
            "CREATE INDEX outbox_undelivered ON outbox (sink, id, next_attempt_ms)
             WHERE state IN ('pending', 'retrying');",
        ),
        // "The same incident from someone else": each report's comparison data, and the keys
        // (grid cell, text min-hashes) it is found under.
        M::up(
            r#"
            CREATE TABLE similar_index (
                id          INTEGER PRIMARY KEY,
                report_id   TEXT NOT NULL REFERENCES reports (id),
                received_ms INTEGER NOT NULL,
                lat         REAL,
                lon         REAL,
                shingles    BLOB NOT NULL,
                family      TEXT,
                problems    TEXT NOT NULL,
                numbers     TEXT NOT NULL,
                wards       TEXT NOT NULL
            );
            CREATE TABLE similar_keys (
                key         INTEGER NOT NULL,
                received_ms INTEGER NOT NULL,
                entry       INTEGER NOT NULL,
                PRIMARY KEY (key, received_ms, entry)
            ) WITHOUT ROWID;
            -- The same e-mail (Message-ID) arriving in a second mailbox.
            CREATE INDEX inbox_email_external ON inbox (external_id) WHERE kind IN ('maildir', 'imap');
            "#,
        ),
        // `phananh purge`: when a report was anonymised and an item's raw bytes removed.
        M::up(
            r#"
            ALTER TABLE reports ADD COLUMN purged_at TEXT;
            ALTER TABLE inbox ADD COLUMN purged_at TEXT;
            "#,
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
