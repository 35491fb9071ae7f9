//! Integration tests of wallets: idempotent credits and debits that never go negative, and
//! concurrent credits that are all counted, on both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    wallet_credits_and_debits_are_idempotent_and_never_negative,
    concurrent_credits_to_one_wallet_are_all_counted,
);

mod scenarios {
    use super::*;

    pub(super) async fn wallet_credits_and_debits_are_idempotent_and_never_negative(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "w@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let mut w = app.wallets();

        let first = ok!(w.credit_tokens(req("acme", credit(&wallet, "100", "c1"))));
        assert_eq!(first.balance, "100");
        assert!(!first.replayed);
        let retry = ok!(w.credit_tokens(req("acme", credit(&wallet, "100", "c1"))));
        assert_eq!(retry.balance, "100");
        assert!(retry.replayed);
        assert_eq!(
            retry.position, first.position,
            "a retry reports the original outcome"
        );
        fails!(
            w.credit_tokens(req("acme", credit(&wallet, "101", "c1"))),
            Code::FailedPrecondition,
            "IDEMPOTENCY_KEY_REUSED",
        );
        let status = fails!(
            w.debit_tokens(req("acme", debit(&wallet, "150", "d1"))),
            Code::FailedPrecondition,
            "INSUFFICIENT_BALANCE",
        );
        assert_eq!(detail(&status, "available").as_deref(), Some("100"));
        let debited = ok!(w.debit_tokens(req("acme", debit(&wallet, "40", "d2"))));
        assert_eq!(debited.balance, "60");
        fails!(
            w.credit_tokens(req("acme", credit(&wallet, "-5", "c9"))),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        fails!(
            w.credit_tokens(req("acme", credit(&wallet, "1.5", "c9"))),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );

        w.suspend_wallet(req(
            "acme",
            pb::SuspendWalletRequest {
                wallet_id: wallet.clone(),
            },
        ))
        .await
        .expect("suspends");
        fails!(
            w.debit_tokens(req("acme", debit(&wallet, "1", "d3"))),
            Code::FailedPrecondition,
            "WALLET_NOT_USABLE",
        );
        let got = ok!(w.get_wallet(req(
            "acme",
            pb::GetWalletRequest {
                wallet_id: wallet.clone(),
            },
        )))
        .wallet
        .expect("wallet");
        assert_eq!(got.status, pb::WalletStatus::Suspended as i32);
        assert_eq!(
            got.balances,
            vec![pb::TokenBalance {
                token: "PTS".into(),
                amount: "60".into()
            }]
        );
        assert!(got.address.starts_with("0x") && got.address.len() == 42);

        // Opening the same wallet again is refused; the address is the same forever.
        let again = w
            .open_wallet(req("acme", user_wallet(user.clone(), "polygon")))
            .await;
        assert_error(again, Code::AlreadyExists, "WALLET_ALREADY_EXISTS");
    }

    pub(super) async fn concurrent_credits_to_one_wallet_are_all_counted(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "hot@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let calls = (0..32).map(|i| {
            let mut w = app.wallets();
            let wallet = wallet.clone();
            async move {
                w.credit_tokens(req("acme", credit(&wallet, "3", &format!("k{i}"))))
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        for r in &results {
            assert!(r.is_ok(), "every credit lands: {r:?}");
        }
        let got = ok!(app
            .wallets()
            .get_wallet(req("acme", pb::GetWalletRequest { wallet_id: wallet })))
        .wallet
        .expect("wallet");
        assert_eq!(got.balances[0].amount, "96");
    }
}
