//! Fresh stores for the store's integration tests: a uniquely named PostgreSQL database
//! (the shared test kit's, dropped afterwards) or a SQLite file in its own temporary
//! directory.

#![allow(dead_code)] // Each test file uses its own part.

use identity_testkit::PgDatabase;
use uuid::Uuid;

/// A fresh store: (url, cleanup handle).
pub(crate) enum Fresh {
    Postgres(PgDatabase),
    Sqlite(std::path::PathBuf),
}

impl Fresh {
    pub(crate) async fn postgres() -> (Self, String) {
        let db = PgDatabase::create("identity_store")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = db.url.clone();
        (Self::Postgres(db), url)
    }

    pub(crate) fn sqlite() -> (Self, String) {
        let dir = std::env::temp_dir().join(format!("identity_store_{}", Uuid::new_v4().simple()));
        let url = format!("sqlite://{}/log.db", dir.display());
        (Self::Sqlite(dir), url)
    }

    pub(crate) async fn remove(self) {
        match self {
            Self::Postgres(db) => db.drop().await,
            Self::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
