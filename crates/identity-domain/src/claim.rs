//! Uniqueness claims. One `UniqueClaim` aggregate guards one normalized value (an email, a
//! phone, an external id or a person code) in one tenant; its id is `derive::claim_id`.
//!
//! Why an aggregate: two concurrent claims of a fresh value both load an empty history and
//! both try to append sequence 1; the event store's primary key lets exactly one of them
//! win, and the loser re-runs on fresh state and sees the value taken. No lock, no read
//! model, no window.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::error::{ClaimKind, DomainError};
use crate::values::UserId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimCommand {
    /// Claims the value for `owner`. Claiming a value one already holds changes nothing.
    Claim { kind: ClaimKind, owner: UserId },
    /// Gives the value up, if `owner` holds it.
    Release { owner: UserId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimEvent {
    ValueClaimed { kind: ClaimKind, owner: UserId },
    ValueReleased { owner: UserId },
}

domain_event!(ClaimEvent, "1.0", [ValueClaimed, ValueReleased,]);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueClaim {
    pub owner: Option<UserId>,
}

impl Aggregate for UniqueClaim {
    const TYPE: &'static str = "UniqueClaim";
    type Command = ClaimCommand;
    type Event = ClaimEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ClaimCommand::Claim { kind, owner } => match self.owner {
                Some(current) if current == owner => Ok(()),
                Some(_) => Err(DomainError::AlreadyAssigned(kind)),
                None => {
                    sink.write(ClaimEvent::ValueClaimed { kind, owner }, self)
                        .await;
                    Ok(())
                }
            },
            ClaimCommand::Release { owner } => {
                if self.owner == Some(owner) {
                    sink.write(ClaimEvent::ValueReleased { owner }, self).await;
                }
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ClaimEvent::ValueClaimed { owner, .. } => self.owner = Some(owner),
            ClaimEvent::ValueReleased { .. } => self.owner = None,
        }
    }
}

/// The unique values a person holds claims on: the user's email, phone and external id and
/// the person code of their identity. What an erasure gives up, and what a claim is matched
/// against when it moves to a new id.
pub fn values_held(
    person: &crate::user::User,
    kyc: &crate::identification::Identification,
) -> Vec<(ClaimKind, String)> {
    [
        person
            .email
            .as_ref()
            .map(|e| (ClaimKind::Email, e.to_string())),
        person
            .phone
            .as_ref()
            .map(|p| (ClaimKind::Phone, p.to_string())),
        person
            .external_id
            .as_ref()
            .map(|x| (ClaimKind::ExternalId, x.to_string())),
        kyc.identity
            .as_ref()
            .map(|i| (ClaimKind::PersonCode, i.person_code.key())),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    use super::*;

    fn user(n: u128) -> UserId {
        UserId(Uuid::from_u128(n))
    }

    #[test]
    fn claiming_a_free_value_records_the_owner() {
        TestFramework::<UniqueClaim>::with(())
            .given_no_previous_events()
            .when(ClaimCommand::Claim {
                kind: ClaimKind::Email,
                owner: user(1),
            })
            .then_expect_events(vec![ClaimEvent::ValueClaimed {
                kind: ClaimKind::Email,
                owner: user(1),
            }]);
    }

    #[test]
    fn claiming_a_value_held_by_another_user_is_rejected_with_its_reason() {
        TestFramework::<UniqueClaim>::with(())
            .given(vec![ClaimEvent::ValueClaimed {
                kind: ClaimKind::ExternalId,
                owner: user(1),
            }])
            .when(ClaimCommand::Claim {
                kind: ClaimKind::ExternalId,
                owner: user(2),
            })
            .then_expect_error(DomainError::AlreadyAssigned(ClaimKind::ExternalId));
    }

    #[test]
    fn claiming_a_value_one_already_holds_changes_nothing() {
        TestFramework::<UniqueClaim>::with(())
            .given(vec![ClaimEvent::ValueClaimed {
                kind: ClaimKind::Phone,
                owner: user(1),
            }])
            .when(ClaimCommand::Claim {
                kind: ClaimKind::Phone,
                owner: user(1),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_released_value_can_be_claimed_by_someone_else() {
        TestFramework::<UniqueClaim>::with(())
            .given(vec![
                ClaimEvent::ValueClaimed {
                    kind: ClaimKind::PersonCode,
                    owner: user(1),
                },
                ClaimEvent::ValueReleased { owner: user(1) },
            ])
            .when(ClaimCommand::Claim {
                kind: ClaimKind::PersonCode,
                owner: user(2),
            })
            .then_expect_events(vec![ClaimEvent::ValueClaimed {
                kind: ClaimKind::PersonCode,
                owner: user(2),
            }]);
    }

    #[test]
    fn only_the_owner_can_release_a_value() {
        TestFramework::<UniqueClaim>::with(())
            .given(vec![ClaimEvent::ValueClaimed {
                kind: ClaimKind::Email,
                owner: user(1),
            }])
            .when(ClaimCommand::Release { owner: user(2) })
            .then_expect_events(vec![]);
    }
}
