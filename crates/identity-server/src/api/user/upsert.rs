//! UpsertUsers, one item at a time: the item's match key finds its user, who is updated
//! (contact values through their claims, race-free), or a new user is registered. Two calls
//! registering the same new key at once both succeed: the one that loses the claim race
//! finds the winner's user and updates it.

use identity_domain::user::{ProfileField, SetContacts, Upsert};

use super::*;

/// The fields an update mask may list.
const MASKABLE: [&str; 10] = [
    "email",
    "phone",
    "external_id",
    "first_name",
    "last_name",
    "locale",
    "custom_data",
    "public_profile",
    "details",
    "active",
];

/// How many times an item is decided again after losing a claim race to another call.
const UPSERT_RACES: usize = 3;

/// The request-wide options of an upsert: the match key and the update mask.
#[derive(Debug, Clone, Default)]
pub(super) struct UpsertOptions {
    key: Option<ClaimKind>,
    mask: Option<BTreeSet<String>>,
}

impl UpsertOptions {
    pub(super) fn parse(req: &pb::UpsertUsersRequest) -> ApiResult<Self> {
        use pb::UpsertMatchKey as K;
        let mut v = Violations::new();
        let key = match K::try_from(req.match_key) {
            Ok(K::Unspecified) => None,
            Ok(K::ExternalId) => Some(ClaimKind::ExternalId),
            Ok(K::Email) => Some(ClaimKind::Email),
            Ok(K::Phone) => Some(ClaimKind::Phone),
            Err(_) => {
                v.push("match_key", "unknown match key");
                None
            }
        };
        let mask = req.update_mask.as_ref().map(|m| {
            for path in &m.paths {
                if !MASKABLE.contains(&path.as_str()) {
                    v.push(
                        "update_mask",
                        format!("{path} cannot be updated; allowed: {}", MASKABLE.join(", ")),
                    );
                }
            }
            m.paths.iter().cloned().collect()
        });
        v.finish().map_err(ApiError::from)?;
        Ok(Self { key, mask })
    }

    /// Whether an update changes `field` (and then the item's value, or nothing, is kept).
    fn listed(&self, field: &str, given: bool) -> bool {
        self.mask.as_ref().map_or(given, |m| m.contains(field))
    }

    /// What an update of a matched user changes, from the item as parsed.
    fn update(&self, cmd: &RegisterUser, active: Option<bool>, at: DateTime<Utc>) -> Upsert {
        fn change<T: Clone>(
            o: &UpsertOptions,
            field: &str,
            value: &Option<T>,
        ) -> Option<Option<T>> {
            o.listed(field, value.is_some()).then(|| value.clone())
        }
        let object = |field: &str, value: &JsonObject| {
            let given = !value.as_map().is_empty();
            (self.listed(field, given) && given).then(|| value.clone())
        };
        let mut clear = BTreeSet::new();
        for (field, name, empty) in [
            (
                ProfileField::FirstName,
                "first_name",
                cmd.first_name.is_none(),
            ),
            (ProfileField::LastName, "last_name", cmd.last_name.is_none()),
            (ProfileField::Locale, "locale", cmd.locale.is_none()),
            (
                ProfileField::CustomData,
                "custom_data",
                cmd.custom_data.as_map().is_empty(),
            ),
            (
                ProfileField::PublicProfile,
                "public_profile",
                cmd.public_profile.as_map().is_empty(),
            ),
        ] {
            if empty && self.mask.as_ref().is_some_and(|m| m.contains(name)) {
                clear.insert(field);
            }
        }
        Upsert {
            profile: UpdateProfile {
                first_name: change(self, "first_name", &cmd.first_name).flatten(),
                last_name: change(self, "last_name", &cmd.last_name).flatten(),
                locale: change(self, "locale", &cmd.locale).flatten(),
                custom_data: object("custom_data", &cmd.custom_data),
                public_profile: object("public_profile", &cmd.public_profile),
                // Replaced whole; listed in a mask without details, they are cleared.
                details: self
                    .listed("details", !cmd.details.is_empty())
                    .then(|| cmd.details.clone()),
            },
            clear,
            contacts: SetContacts {
                email: change(self, "email", &cmd.email),
                phone: change(self, "phone", &cmd.phone),
                external_id: change(self, "external_id", &cmd.external_id),
            },
            active: active.filter(|_| self.listed("active", true)),
            at,
        }
    }
}

impl UserApi {
    pub(super) async fn answer_upsert_users(
        &self,
        request: Request<pb::UpsertUsersRequest>,
    ) -> Rpc<pb::UpsertUsersResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let options = UpsertOptions::parse(&req)?;
        let items = req.users;
        tracing::Span::current().record("items", items.len());
        if items.len() > MAX_UPSERT_ITEMS {
            return Err(ApiError::from(DomainError::invalid(
                "users",
                format!("at most {MAX_UPSERT_ITEMS} users per call"),
            ))
            .into());
        }
        let mut results = Vec::with_capacity(items.len());
        for (index, input) in items.into_iter().enumerate() {
            let result = match self.upsert_one(&ctx, index, input, &options).await {
                Ok(r) => r,
                Err(e) => pb::UpsertUserResult {
                    index: index as u32,
                    user_id: String::new(),
                    created: false,
                    position: 0,
                    error: Some(item_error(&e)),
                },
            };
            results.push(result);
        }
        Ok(Response::new(pb::UpsertUsersResponse { results }))
    }

    async fn upsert_one(
        &self,
        ctx: &RequestContext,
        index: usize,
        input: pb::UserInput,
        options: &UpsertOptions,
    ) -> ApiResult<pb::UpsertUserResult> {
        let prefix = format!("users[{index}].");
        let active = input.active;
        let id_key = self.core.id_key(ctx).await?;
        let cmd = parse_input(input, &prefix, UserId(Uuid::new_v4()), ctx, id_key)?;
        let keys: Vec<(ClaimKind, String)> = claims_of(&cmd)
            .into_iter()
            .filter(|(kind, _)| options.key.is_none_or(|k| k == *kind))
            .collect();
        if let (Some(kind), true) = (options.key, keys.is_empty()) {
            let mut v = Violations::new();
            v.push(
                format!("{prefix}{}", kind.as_str()),
                "is required: it is the match key",
            );
            v.finish().map_err(ApiError::from)?;
        }
        let result = |user_id: UserId, position: u64, created: bool| pb::UpsertUserResult {
            index: index as u32,
            user_id: user_id.to_string(),
            created,
            position,
            error: None,
        };
        let mut race = 0;
        loop {
            let mut existing = None;
            for (kind, value) in &keys {
                if let Some(owner) = self.core.owner_of(ctx, *kind, value).await? {
                    existing = Some(owner);
                    break;
                }
            }
            if let Some(owner) = existing {
                let update = options.update(&cmd, active, Utc::now());
                let executed = self.update_matched(ctx, owner, update).await?;
                return Ok(result(owner, executed.position, false));
            }
            match self.register(ctx, cmd.clone(), active).await {
                Ok(executed) => return Ok(result(cmd.user_id, executed.position, true)),
                // Another call took one of this item's match values first: update its user.
                Err(ApiError::Domain(DomainError::AlreadyAssigned(kind)))
                    if race < UPSERT_RACES && keys.iter().any(|(k, _)| *k == kind) =>
                {
                    race += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Updates a matched user in one unit: the user's events and the claims of the contact
    /// values they set (claimed) or replace and clear (released) commit together.
    async fn update_matched(
        &self,
        ctx: &RequestContext,
        owner: UserId,
        update: Upsert,
    ) -> ApiResult<Executed<User>> {
        let id = ctx.aggregate_id(owner);
        let services = &self.core.user_services;
        self.core
            .transact::<User, _>(ctx.event_metadata(), &id, |mut unit| {
                let (id, command) = (&id, UserCommand::Upsert(Box::new(update.clone())));
                Box::pin(async move {
                    let decided = unit.decide::<User>(id, command, services).await?;
                    for e in &decided.events {
                        let (kind, new, previous) = match e {
                            UserEvent::EmailSet {
                                email, previous, ..
                            } => (
                                ClaimKind::Email,
                                email.as_ref().map(ToString::to_string),
                                previous.as_ref().map(ToString::to_string),
                            ),
                            UserEvent::PhoneSet {
                                phone, previous, ..
                            } => (
                                ClaimKind::Phone,
                                phone.as_ref().map(ToString::to_string),
                                previous.as_ref().map(ToString::to_string),
                            ),
                            UserEvent::ExternalIdSet {
                                external_id,
                                previous,
                                ..
                            } => (
                                ClaimKind::ExternalId,
                                external_id.as_ref().map(ToString::to_string),
                                previous.as_ref().map(ToString::to_string),
                            ),
                            _ => continue,
                        };
                        match new {
                            Some(new) => {
                                let value = (kind, new.as_str());
                                Core::reclaim_in(&mut unit, ctx, value, previous.as_deref(), owner)
                                    .await?;
                            }
                            None => {
                                let released = previous.map(|p| (kind, p));
                                Core::release_in(&mut unit, ctx, released, owner).await?;
                            }
                        }
                    }
                    Ok((unit, decided))
                })
            })
            .await
    }
}
