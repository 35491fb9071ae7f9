//! Given/when/then and property tests of the Wallet aggregate.

mod common;

use common::*;
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use identity_domain::derive::{counterfactual_address, WalletFactory};
use identity_domain::values::*;
use identity_domain::wallet::*;
use identity_domain::DomainError;
use proptest::prelude::*;
use uuid::Uuid;

type WalletTest = TestFramework<Wallet>;

fn wallet_id() -> WalletId {
    WalletId(Uuid::from_u128(7))
}

fn owner() -> Owner {
    Owner {
        owner_type: OwnerType::User,
        owner_id: user_id(1).to_string(),
    }
}

fn open_cmd(wallet_type: WalletType, external_address: Option<&str>) -> WalletCommand {
    WalletCommand::Open(Box::new(OpenWallet {
        wallet_id: wallet_id(),
        tenant: tenant(),
        owner: owner(),
        owner_identifier: "u1@acme.id".into(),
        wallet_type,
        network: Network::Polygon,
        external_address: external_address.map(str::to_string),
        factory: Some(factory()),
        at: t(0),
    }))
}

fn factory() -> WalletFactory {
    WalletFactory::parse("0x4e59b44847b379578588920ca78fbf26c0b4956c:0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470").expect("factory")
}

fn opened() -> WalletEvent {
    let address = counterfactual_address("u1@acme.id", &factory());
    WalletEvent::WalletOpened {
        wallet_id: wallet_id(),
        tenant: tenant(),
        owner: owner(),
        wallet_type: WalletType::Internal,
        network: Network::Polygon,
        explorer_url: Network::Polygon.explorer_url(&address),
        address,
        opened_at: t(0),
    }
}

fn credited(tok: &str, amt: u128, balance: u128, k: &str) -> WalletEvent {
    WalletEvent::TokensCredited {
        token: token(tok),
        amount: amount(amt),
        balance: amount(balance),
        idempotency_key: key(k),
        at: t(1),
    }
}

fn movement(tok: &str, amt: u128, k: &str) -> TokenMovement {
    TokenMovement {
        token: token(tok),
        amount: amount(amt),
        idempotency_key: key(k),
        at: t(1),
    }
}

fn given_active() -> cqrs_es::test::AggregateTestExecutor<Wallet> {
    WalletTest::with(()).given(vec![opened(), WalletEvent::WalletActivated { at: t(0) }])
}

#[test]
fn opening_an_internal_wallet_derives_its_address_from_the_owner() {
    WalletTest::with(())
        .given_no_previous_events()
        .when(open_cmd(WalletType::Internal, None))
        .then_expect_events(vec![opened()]);
}

#[test]
fn an_internal_evm_wallet_needs_its_networks_factory_and_a_solana_one_does_not() {
    let without = |network| {
        let WalletCommand::Open(mut open) = open_cmd(WalletType::Internal, None) else {
            unreachable!("an open command")
        };
        open.network = network;
        open.factory = None;
        WalletTest::with(())
            .given_no_previous_events()
            .when(WalletCommand::Open(open))
            .inspect_result()
    };
    let err = without(Network::Evm(80002)).expect_err("no factory");
    assert_eq!(err.reason(), "NO_WALLET_FACTORY");
    assert!(err.to_string().contains("evm:80002"), "{err}");
    let events = without(Network::Solana).expect("solana needs no factory");
    assert!(matches!(
        &events[0],
        WalletEvent::WalletOpened { address, .. } if !address.starts_with("0x")
    ));
}

#[test]
fn an_external_wallet_needs_a_valid_address() {
    let err = WalletTest::with(())
        .given_no_previous_events()
        .when(open_cmd(WalletType::External, None))
        .inspect_result()
        .expect_err("no address");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
    let err = WalletTest::with(())
        .given_no_previous_events()
        .when(open_cmd(WalletType::External, Some("0x12")))
        .inspect_result()
        .expect_err("bad address");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
    let events = WalletTest::with(())
        .given_no_previous_events()
        .when(open_cmd(
            WalletType::External,
            Some("0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"),
        ))
        .inspect_result()
        .expect("opens");
    assert!(
        matches!(&events[0], WalletEvent::WalletOpened { address, .. }
        if address == "0xabcdef0123456789abcdef0123456789abcdef01")
    );
}

#[test]
fn opening_a_wallet_twice_is_rejected() {
    WalletTest::with(())
        .given(vec![opened()])
        .when(open_cmd(WalletType::Internal, None))
        .then_expect_error(DomainError::WalletAlreadyExists);
}

#[test]
fn commands_on_an_unknown_wallet_fail_with_wallet_not_found() {
    WalletTest::with(())
        .given_no_previous_events()
        .when(WalletCommand::Credit(movement("USDC", 1, "k")))
        .then_expect_error(DomainError::WalletNotFound);
}

#[test]
fn a_wallet_moves_through_its_lifecycle() {
    WalletTest::with(())
        .given(vec![opened()])
        .when(WalletCommand::Activate { at: t(1) })
        .then_expect_events(vec![WalletEvent::WalletActivated { at: t(1) }]);
    given_active()
        .when(WalletCommand::Suspend { at: t(2) })
        .then_expect_events(vec![WalletEvent::WalletSuspended { at: t(2) }]);
    given_active()
        .and(vec![WalletEvent::WalletSuspended { at: t(2) }])
        .when(WalletCommand::Activate { at: t(3) })
        .then_expect_events(vec![WalletEvent::WalletActivated { at: t(3) }]);
    given_active()
        .when(WalletCommand::Close { at: t(4) })
        .then_expect_events(vec![WalletEvent::WalletClosed { at: t(4) }]);
}

#[test]
fn a_closed_wallet_cannot_be_reactivated() {
    given_active()
        .and(vec![WalletEvent::WalletClosed { at: t(4) }])
        .when(WalletCommand::Activate { at: t(5) })
        .then_expect_error(DomainError::InvalidWalletTransition {
            from: "closed",
            to: "active",
        });
}

#[test]
fn a_pending_wallet_cannot_be_suspended() {
    WalletTest::with(())
        .given(vec![opened()])
        .when(WalletCommand::Suspend { at: t(5) })
        .then_expect_error(DomainError::InvalidWalletTransition {
            from: "pending",
            to: "suspended",
        });
}

#[test]
fn crediting_records_the_resulting_balance() {
    given_active()
        .and(vec![credited("USDC", 10, 10, "k1")])
        .when(WalletCommand::Credit(movement("USDC", 5, "k2")))
        .then_expect_events(vec![credited("USDC", 5, 15, "k2")]);
}

#[test]
fn debiting_records_the_resulting_balance() {
    given_active()
        .and(vec![credited("USDC", 10, 10, "k1")])
        .when(WalletCommand::Debit(movement("USDC", 4, "k2")))
        .then_expect_events(vec![WalletEvent::TokensDebited {
            token: token("USDC"),
            amount: amount(4),
            balance: amount(6),
            idempotency_key: key("k2"),
            at: t(1),
        }]);
}

#[test]
fn debiting_more_than_the_balance_fails_with_the_available_amount() {
    given_active()
        .and(vec![credited("USDC", 10, 10, "k1")])
        .when(WalletCommand::Debit(movement("USDC", 11, "k2")))
        .then_expect_error(DomainError::InsufficientBalance {
            available: 10,
            requested: 11,
        });
}

#[test]
fn retrying_a_credit_with_the_same_key_appends_nothing() {
    given_active()
        .and(vec![credited("USDC", 10, 10, "k1")])
        .when(WalletCommand::Credit(movement("USDC", 10, "k1")))
        .then_expect_events(vec![]);
}

#[test]
fn a_retry_reports_the_original_outcome() {
    let mut w = Wallet::default();
    for e in [
        opened(),
        credited("USDC", 10, 10, "k1"),
        credited("USDC", 5, 15, "k2"),
    ] {
        w.apply(e);
    }
    let first = w.outcome(&key("k1")).expect("recorded");
    assert_eq!(first.balance, amount(10));
    assert_eq!(first.sequence, 2);
}

#[test]
fn reusing_a_key_with_another_payload_is_rejected() {
    given_active()
        .and(vec![credited("USDC", 10, 10, "k1")])
        .when(WalletCommand::Credit(movement("USDC", 11, "k1")))
        .then_expect_error(DomainError::IdempotencyKeyReused);
    given_active()
        .and(vec![credited("USDC", 10, 10, "k1")])
        .when(WalletCommand::Debit(movement("USDC", 10, "k1")))
        .then_expect_error(DomainError::IdempotencyKeyReused);
}

#[test]
fn suspended_and_closed_wallets_accept_no_debits() {
    given_active()
        .and(vec![
            credited("USDC", 10, 10, "k1"),
            WalletEvent::WalletSuspended { at: t(2) },
        ])
        .when(WalletCommand::Debit(movement("USDC", 1, "k2")))
        .then_expect_error(DomainError::WalletNotUsable("suspended"));
    given_active()
        .and(vec![
            credited("USDC", 10, 10, "k1"),
            WalletEvent::WalletClosed { at: t(2) },
        ])
        .when(WalletCommand::Debit(movement("USDC", 1, "k2")))
        .then_expect_error(DomainError::WalletNotUsable("closed"));
}

#[test]
fn a_closed_wallet_accepts_no_credits() {
    given_active()
        .and(vec![WalletEvent::WalletClosed { at: t(2) }])
        .when(WalletCommand::Credit(movement("USDC", 1, "k2")))
        .then_expect_error(DomainError::WalletNotUsable("closed"));
}

#[test]
fn a_credit_that_would_overflow_is_rejected() {
    given_active()
        .and(vec![credited("USDC", u128::MAX, u128::MAX, "k1")])
        .when(WalletCommand::Credit(movement("USDC", 1, "k2")))
        .then_expect_error(DomainError::AmountOverflow);
}

#[derive(Debug, Clone)]
enum Op {
    Credit(u8, u64),
    Debit(u8, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 1u64..1_000).prop_map(|(t, a)| Op::Credit(t, a)),
        (0u8..3, 1u64..1_500).prop_map(|(t, a)| Op::Debit(t, a)),
    ]
}

fn run(ops: &[Op]) -> (Wallet, Vec<WalletEvent>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut wallet = Wallet::default();
    let mut log = vec![opened(), WalletEvent::WalletActivated { at: t(0) }];
    for e in log.clone() {
        wallet.apply(e);
    }
    for (i, op) in ops.iter().enumerate() {
        let tokens = ["USDC", "PTS", "EUR"];
        let cmd = match op {
            Op::Credit(tk, a) => {
                WalletCommand::Credit(movement(tokens[*tk as usize], *a as u128, &format!("k{i}")))
            }
            Op::Debit(tk, a) => {
                WalletCommand::Debit(movement(tokens[*tk as usize], *a as u128, &format!("k{i}")))
            }
        };
        let sink = cqrs_es::event_sink::EventSink::default();
        let result = rt.block_on(wallet.handle(cmd, &(), &sink));
        let events = rt.block_on(sink.collect());
        if result.is_ok() {
            log.extend(events);
        } else {
            // A refused command must leave no trace: rebuild state from the accepted log.
            wallet = Wallet::default();
            for e in log.clone() {
                wallet.apply(e);
            }
        }
    }
    (wallet, log)
}

proptest! {
    #[test]
    fn random_credits_and_debits_never_make_a_balance_negative(ops in proptest::collection::vec(op(), 0..60)) {
        let (wallet, log) = run(&ops);
        let mut expected = std::collections::BTreeMap::<TokenId, i128>::new();
        for e in &log {
            match e {
                WalletEvent::TokensCredited { token, amount, .. } => *expected.entry(token.clone()).or_default() += amount.value() as i128,
                WalletEvent::TokensDebited { token, amount, .. } => *expected.entry(token.clone()).or_default() -= amount.value() as i128,
                _ => {}
            }
            for v in expected.values() {
                prop_assert!(*v >= 0, "a balance went negative");
            }
        }
        for (token, v) in expected {
            prop_assert_eq!(wallet.balance(&token).value() as i128, v);
        }
    }

    #[test]
    fn replaying_a_wallets_events_reproduces_its_balance(ops in proptest::collection::vec(op(), 0..60)) {
        let (wallet, log) = run(&ops);
        let mut replayed = Wallet::default();
        for e in log {
            replayed.apply(e);
        }
        prop_assert_eq!(replayed, wallet);
    }
}

#[test]
fn a_wallet_changes_owner_keeping_its_balances_and_the_same_owner_changes_nothing() {
    let survivor = Owner {
        owner_type: OwnerType::User,
        owner_id: user_id(2).to_string(),
    };
    let change = |owner: Owner| WalletCommand::ChangeOwner { owner, at: t(3) };
    let credited_once = vec![
        opened(),
        WalletEvent::WalletActivated { at: t(0) },
        credited("PTS", 70, 70, "k1"),
    ];
    WalletTest::with(())
        .given(credited_once.clone())
        .when(change(survivor.clone()))
        .then_expect_events(vec![WalletEvent::WalletOwnerChanged {
            owner: survivor,
            previous: owner(),
            at: t(3),
        }]);
    WalletTest::with(())
        .given(credited_once)
        .when(change(owner()))
        .then_expect_events(vec![]);
}
