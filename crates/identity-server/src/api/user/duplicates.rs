//! Likely duplicates among the users of a ListUsers page (docs/adr/0007, rule 7): users that
//! share a name, or a mailbox spelled differently. Email, phone, external id and person code
//! are claimed, so no two users hold the same one; these keys find the people registered
//! twice under different ones.

use std::collections::{BTreeMap, BTreeSet};

use identity_projections::queries::DirectoryUser;

use super::*;

/// A group of users that look like one person, oldest first, and the keys they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    pub(super) users: Vec<String>,
    pub(super) shared: BTreeSet<&'static str>,
}

/// How a user's key of one kind is read.
type KeyOf = fn(&DirectoryUser) -> Option<String>;

/// First and last name, lowercase, single-spaced; none unless both are there.
fn name_key(u: &DirectoryUser) -> Option<String> {
    let (first, last) = (u.first_name.as_deref()?, u.last_name.as_deref()?);
    let words: Vec<String> = format!("{first} {last}")
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    Some(words.join(" "))
}

/// The mailbox of an email: lowercase, the local part without dots and without a `+tag`.
fn mailbox_key(u: &DirectoryUser) -> Option<String> {
    let (local, domain) = u.email.as_deref()?.split_once('@')?;
    let local = local.split('+').next().unwrap_or(local).replace('.', "");
    Some(format!(
        "{}@{}",
        local.to_lowercase(),
        domain.to_lowercase()
    ))
}

/// The groups of likely duplicates among `users` (merged users left out), in the order of
/// their oldest member.
pub(super) fn groups(users: &[DirectoryUser]) -> Vec<Group> {
    let live: Vec<&DirectoryUser> = users.iter().filter(|u| u.merged_into.is_none()).collect();
    // Union-find over the page: users sharing any key end in one group.
    let mut parent: Vec<usize> = (0..live.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut links: Vec<(usize, usize, &'static str)> = Vec::new();
    let keys: [(&'static str, KeyOf); 2] = [("name", name_key), ("email", mailbox_key)];
    for (label, key) in keys {
        let mut first: BTreeMap<String, usize> = BTreeMap::new();
        for (i, u) in live.iter().enumerate() {
            if let Some(k) = key(u) {
                match first.get(&k) {
                    Some(&j) => links.push((j, i, label)),
                    None => {
                        first.insert(k, i);
                    }
                }
            }
        }
    }
    for (a, b, _) in &links {
        let (ra, rb) = (root(&mut parent, *a), root(&mut parent, *b));
        if ra != rb {
            parent[rb] = ra;
        }
    }
    let mut by_root: BTreeMap<usize, Group> = BTreeMap::new();
    for (a, _, label) in &links {
        let r = root(&mut parent, *a);
        by_root
            .entry(r)
            .or_insert_with(|| Group {
                users: Vec::new(),
                shared: BTreeSet::new(),
            })
            .shared
            .insert(label);
    }
    for (i, u) in live.iter().enumerate() {
        let r = root(&mut parent, i);
        if let Some(g) = by_root.get_mut(&r) {
            g.users.push(u.user_id.clone());
        }
    }
    let order: BTreeMap<&str, (&str, &str)> = live
        .iter()
        .map(|u| {
            (
                u.user_id.as_str(),
                (u.created_at.as_str(), u.user_id.as_str()),
            )
        })
        .collect();
    let mut out: Vec<Group> = by_root.into_values().collect();
    for g in &mut out {
        g.users.sort_by_key(|id| order.get(id.as_str()).copied());
    }
    out.sort_by_key(|g| {
        g.users
            .first()
            .and_then(|id| order.get(id.as_str()).copied())
    });
    out
}

impl UserApi {
    /// Merges each group into its oldest user, one merge at a time; a failed merge is
    /// reported and the others go on.
    pub(super) async fn merge_groups(
        &self,
        ctx: &RequestContext,
        groups: &[Group],
        wait: std::time::Duration,
    ) -> ApiResult<Vec<pb::DuplicateMerge>> {
        if !ctx.caller.holds(Permission::UpdateUsers) {
            return Err(ApiError::PermissionDenied(Permission::UpdateUsers));
        }
        let mut merges = Vec::new();
        for g in groups {
            let Some((survivor, duplicates)) = g.users.split_first() else {
                continue;
            };
            for duplicate in duplicates {
                let ids = (
                    parse_user_id("user_ids", survivor)?,
                    parse_user_id("user_ids", duplicate)?,
                );
                let merged = self.merge(ctx, ids.1, ids.0, wait).await;
                let (position, error) = match merged {
                    Ok(executed) => (executed.position, None),
                    Err(e) => (0, Some(item_error(&e))),
                };
                merges.push(pb::DuplicateMerge {
                    survivor_user_id: survivor.clone(),
                    duplicate_user_id: duplicate.clone(),
                    position,
                    error,
                });
            }
        }
        Ok(merges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, at: &str, name: (&str, &str), email: &str) -> DirectoryUser {
        DirectoryUser {
            user_id: id.into(),
            email: Some(email.into()),
            phone: None,
            external_id: None,
            identifier_email: String::new(),
            first_name: Some(name.0.into()),
            last_name: Some(name.1.into()),
            locale: None,
            active: true,
            roles: Vec::new(),
            public_profile: serde_json::Map::new(),
            merged_into: None,
            created_at: at.into(),
            updated_at: at.into(),
            version: 1,
            wallet_addresses: Vec::new(),
            wallets: Vec::new(),
            details: Default::default(),
        }
    }

    #[test]
    fn users_sharing_a_name_or_a_mailbox_are_grouped_oldest_first() {
        let users = vec![
            user("c", "3", ("Ada", "Lovelace"), "ada.l+news@example.com"),
            user("a", "1", ("Grace", "Hopper"), "adal@example.com"),
            user("b", "2", ("ada ", " LOVELACE"), "other@example.com"),
            user("d", "4", ("Alan", "Turing"), "alan@example.com"),
        ];
        let found = groups(&users);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].users, vec!["a", "b", "c"]);
        assert_eq!(
            found[0].shared.iter().copied().collect::<Vec<_>>(),
            vec!["email", "name"]
        );
        let mut merged = users.clone();
        merged[1].merged_into = Some("x".into());
        let found = groups(&merged);
        assert_eq!(found[0].users, vec!["b", "c"]);
    }
}
