//! Issue 16's promise, checked as an operator would: the built binary driven with grpcurl,
//! on both stores. After EraseUser neither the SQLite files nor a `pg_dump` of the PostgreSQL
//! database hold any of the person's values, while their wallet's balance and the audit
//! trail's non-personal facts remain, VerifyChain passes, and their email and phone can be
//! registered by someone new.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::binary::*;
use common::*;
use serde_json::Value;

const EMAIL: &str = "odalys.wexford@example.com";
const PHONE: &str = "+37255507777";
const PHONE_DIGITS: &str = "37255507777";
const FIRST: &str = "Odalys";
const LAST: &str = "Wexfordshire";
const CUSTOM: &str = "tangerine-orbit-77";
const PERSON_CODE: &str = "49001019876";
const PERSONAL: [&str; 6] = [EMAIL, PHONE_DIGITS, FIRST, LAST, CUSTOM, PERSON_CODE];

/// Which of `PERSONAL` the store still holds: the bytes of every file of the SQLite store,
/// or what `pg_dump` writes of the PostgreSQL database.
fn left_in(store: &Option<TestDb>, dir: &std::path::Path) -> Vec<&'static str> {
    let bytes = match store {
        Some(db) => {
            let dump = std::process::Command::new("pg_dump")
                .arg(db.url())
                .output()
                .expect("pg_dump runs");
            assert!(dump.status.success(), "{dump:?}");
            dump.stdout
        }
        None => std::fs::read_dir(dir.join("data"))
            .expect("the store's folder")
            .flat_map(|f| std::fs::read(f.expect("a file").path()).unwrap_or_default())
            .collect(),
    };
    let text = String::from_utf8_lossy(&bytes);
    PERSONAL.into_iter().filter(|v| text.contains(v)).collect()
}

fn called(server: &Server, method: &str, body: &str) -> Value {
    let (ok, answer) = server.call(method, body);
    assert!(ok, "{method}: {answer}");
    answer
}

async fn a_person_is_erased_through_the_binary(store: Store) {
    let dir =
        std::env::temp_dir().join(format!("identity-erase-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = match store {
        Store::Postgres => Some(TestDb::create(Store::Postgres).await),
        Store::Sqlite => None,
    };
    let url = db.as_ref().map(|d| d.url().to_string());
    let env: Vec<(&str, &str)> = url.iter().map(|u| ("DATABASE_URL", u.as_str())).collect();
    let server = Server::start(&dir, &env);

    let registered = called(
        &server,
        "identity.v1.UserService/RegisterUser",
        &format!(
            r#"{{"user":{{"email":"{EMAIL}","phone":"{PHONE}","first_name":"{FIRST}","last_name":"{LAST}","custom_data":{{"note":"{CUSTOM}"}}}}}}"#
        ),
    );
    let user = registered["user"]["userId"]
        .as_str()
        .expect("id")
        .to_string();
    called(
        &server,
        "identity.v1.IdentificationService/SubmitIdentity",
        &format!(
            r#"{{"user_id":"{user}","identity":{{"first_name":"{FIRST}","surname":"{LAST}","nationality":"EE","person_code":"{PERSON_CODE}","date_of_birth":"1990-01-01"}}}}"#
        ),
    );
    let wallet = server.open_active_wallet(&user);
    assert!(server.move_tokens("CreditTokens", &wallet, "100", "c1").0);
    assert!(server.move_tokens("DebitTokens", &wallet, "40", "d1").0);
    called(
        &server,
        "identity.v1.IdentificationService/ChangeIdentificationLevel",
        &format!(
            r#"{{"user_id":"{user}","level":"IDENTIFICATION_LEVEL_SEMI_IDENTIFIED","reason":"video call"}}"#
        ),
    );
    assert!(
        !left_in(&db, &dir).is_empty(),
        "the read models hold them before"
    );

    let erased = called(
        &server,
        "identity.v1.UserService/EraseUser",
        &format!(r#"{{"user_id":"{user}","basis":"GDPR art. 17, ticket 7"}}"#),
    );
    let position = erased["position"].as_str().expect("position").to_string();

    // Nothing of the person is left in the store (the directory drops them as it catches up).
    within(
        Instant::now(),
        Duration::from_secs(15),
        "the person's values are still in the store",
        || async { left_in(&db, &dir).is_empty() },
    )
    .await;
    // The balance and the non-personal facts remain, and the log still verifies.
    let balances = called(
        &server,
        "identity.v1.WalletService/GetBalances",
        &format!(r#"{{"wallet_id":"{wallet}","min_position":"{position}"}}"#),
    );
    assert_eq!(balances["balances"][0]["amount"], "60", "{balances}");
    let history = called(
        &server,
        "identity.v1.AuditService/GetAggregateHistory",
        &format!(r#"{{"aggregate_type":"Identification","aggregate_id":"{user}"}}"#),
    )
    .to_string();
    assert!(
        history.contains("IDENTIFICATION_LEVEL_SEMI_IDENTIFIED")
            || history.contains("semi_identified"),
        "{history}"
    );
    assert!(history.contains("erased"), "{history}");
    for value in PERSONAL {
        assert!(!history.contains(value), "{value} in {history}");
    }
    let verified = called(&server, "identity.v1.AuditService/VerifyChain", "{}");
    assert_eq!(verified["intact"], true, "{verified}");
    // Their email and phone are free for someone new.
    called(
        &server,
        "identity.v1.UserService/RegisterUser",
        &format!(r#"{{"user":{{"email":"{EMAIL}","phone":"{PHONE}"}}}}"#),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_erased_through_the_binary_on_postgres() {
    a_person_is_erased_through_the_binary(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_erased_through_the_binary_on_sqlite() {
    a_person_is_erased_through_the_binary(Store::Sqlite).await;
}
