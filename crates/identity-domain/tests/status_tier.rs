//! Given/when/then tests of the StatusTier aggregate and the qualification rule.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use cqrs_es::test::TestFramework;
use identity_domain::status_tier::*;
use identity_domain::values::*;
use identity_domain::DomainError;
use uuid::Uuid;

type TierTest = TestFramework<StatusTier>;

fn tier_id(n: u128) -> TierId {
    TierId(Uuid::from_u128(n))
}

fn create_cmd() -> CreateTier {
    CreateTier {
        tier_id: tier_id(1),
        tenant: tenant(),
        name: name("Gold"),
        description: Some(Text::parse("The gold tier").expect("text")),
        min_balance: amount(1000),
        discount: Percentage::parse("12.5").expect("pct"),
        image_url: Some(Url::parse("https://cdn.example.com/gold.png").expect("url")),
        eligible_tokens: BTreeSet::from([token("PTS")]),
        at: t(0),
    }
}

fn created() -> StatusTierEvent {
    let c = create_cmd();
    StatusTierEvent::StatusTierCreated {
        tier_id: c.tier_id,
        tenant: c.tenant,
        name: c.name,
        description: c.description,
        min_balance: c.min_balance,
        discount: c.discount,
        image_url: c.image_url,
        eligible_tokens: c.eligible_tokens,
        created_at: c.at,
    }
}

#[test]
fn creating_a_tier_records_it() {
    TierTest::with(())
        .given_no_previous_events()
        .when(StatusTierCommand::Create(Box::new(create_cmd())))
        .then_expect_events(vec![created()]);
}

#[test]
fn creating_a_tier_twice_is_rejected() {
    TierTest::with(())
        .given(vec![created()])
        .when(StatusTierCommand::Create(Box::new(create_cmd())))
        .then_expect_error(DomainError::TierAlreadyExists);
}

#[test]
fn updating_records_only_what_changed() {
    TierTest::with(())
        .given(vec![created()])
        .when(StatusTierCommand::Update(
            Box::new(UpdateTier {
                name: Some(name("Gold")),
                min_balance: Some(amount(2000)),
                ..UpdateTier::default()
            }),
            t(1),
        ))
        .then_expect_events(vec![min_balance_raised()]);
}

#[test]
fn updating_with_no_change_records_nothing() {
    TierTest::with(())
        .given(vec![created()])
        .when(StatusTierCommand::Update(
            Box::new(UpdateTier {
                discount: Some(Percentage::parse("12.50").expect("pct")),
                ..UpdateTier::default()
            }),
            t(1),
        ))
        .then_expect_events(vec![]);
}

#[test]
fn eligible_tokens_are_added_and_removed() {
    TierTest::with(())
        .given(vec![created()])
        .when(StatusTierCommand::AddEligibleToken {
            token: token("USDC"),
            at: t(1),
        })
        .then_expect_events(vec![StatusTierEvent::EligibleTokenAdded {
            token: token("USDC"),
            at: t(1),
        }]);
    TierTest::with(())
        .given(vec![created()])
        .when(StatusTierCommand::RemoveEligibleToken {
            token: token("PTS"),
            at: t(1),
        })
        .then_expect_events(vec![StatusTierEvent::EligibleTokenRemoved {
            token: token("PTS"),
            at: t(1),
        }]);
    TierTest::with(())
        .given(vec![created()])
        .when(StatusTierCommand::RemoveEligibleToken {
            token: token("USDC"),
            at: t(1),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_retired_tier_accepts_no_changes() {
    TierTest::with(())
        .given(vec![created()])
        .when(StatusTierCommand::Retire { at: t(1) })
        .then_expect_events(vec![StatusTierEvent::StatusTierRetired { at: t(1) }]);
    TierTest::with(())
        .given(vec![
            created(),
            StatusTierEvent::StatusTierRetired { at: t(1) },
        ])
        .when(StatusTierCommand::AddEligibleToken {
            token: token("USDC"),
            at: t(2),
        })
        .then_expect_error(DomainError::TierRetired);
}

#[test]
fn commands_on_an_unknown_tier_fail_with_tier_not_found() {
    TierTest::with(())
        .given_no_previous_events()
        .when(StatusTierCommand::Retire { at: t(1) })
        .then_expect_error(DomainError::TierNotFound);
}

fn rule(id: u128, min: u128, tokens: &[&str]) -> TierRule {
    TierRule {
        id: tier_id(id),
        min_balance: amount(min),
        discount: Percentage::parse("0").expect("pct"),
        eligible_tokens: tokens.iter().map(|t| token(t)).collect(),
    }
}

#[test]
fn a_user_qualifies_for_every_tier_whose_minimum_their_eligible_balance_meets() {
    let balances = BTreeMap::from([(token("PTS"), amount(600)), (token("USDC"), amount(500))]);
    let tiers = [
        rule(1, 100, &["PTS"]),
        rule(2, 1000, &["PTS", "USDC"]),
        rule(3, 1101, &["PTS", "USDC"]),
        rule(4, 50, &["EUR"]),
    ];
    let q = qualify(&balances, &tiers);
    assert_eq!(q.qualifying, vec![tier_id(1), tier_id(2)]);
    assert_eq!(q.highest, Some(tier_id(2)));
}

#[test]
fn a_user_with_no_eligible_balance_qualifies_for_nothing_above_zero() {
    let q = qualify(
        &BTreeMap::new(),
        &[rule(1, 1, &["PTS"]), rule(2, 0, &["PTS"])],
    );
    assert_eq!(q.qualifying, vec![tier_id(2)]);
    assert_eq!(q.highest, Some(tier_id(2)));
}

#[test]
fn a_retired_tier_is_no_rule() {
    let mut tier = StatusTier::default();
    assert!(tier.rule().is_none());
    cqrs_es::Aggregate::apply(&mut tier, created());
    assert!(tier.rule().is_some());
    cqrs_es::Aggregate::apply(&mut tier, StatusTierEvent::StatusTierRetired { at: t(1) });
    assert!(tier.rule().is_none());
}
