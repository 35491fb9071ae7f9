//! UserService's reads: the aggregate for one user, the directory read model for lookups,
//! lists and public profiles, each cut to the caller's field scopes.

use super::*;

impl UserApi {
    /// The directory's row for `key` once it has caught up to `after` (a position and how long
    /// to wait for it), cut to the caller's scopes: its user id and what the caller may see.
    async fn directory_user(
        &self,
        ctx: &RequestContext,
        key: &UserKey,
        after: (u64, std::time::Duration),
        withheld_fields: &mut Vec<String>,
    ) -> ApiResult<(String, pb::DirectoryUser)> {
        self.core
            .catch_up(Projection::Directory, after.0, after.1)
            .await?;
        let user = self
            .core
            .projections
            .find_user(ctx.tenant.as_str(), key)
            .await?
            .ok_or(ApiError::from(DomainError::UserNotFound))?;
        let mut cut = directory_user_to_pb(&user);
        scope::cut_directory_user(&mut cut, ctx.caller.scopes, withheld_fields);
        Ok((user.user_id, cut))
    }

    pub(super) async fn answer_get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Rpc<pb::GetUserResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = parse_user_id("user_id", &request.get_ref().user_id)?;
        scope::check_mask(
            "User",
            request.get_ref().read_mask.as_ref(),
            ctx.caller.scopes,
        )?;
        let loaded = self.core.load_user(&ctx, user).await?;
        let (user, withheld_fields) =
            scoped_user(&self.core, &ctx, &loaded.aggregate, loaded.sequence).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user),
            withheld_fields,
        }))
    }

    pub(super) async fn answer_get_user_with_balances(
        &self,
        request: Request<pb::GetUserWithBalancesRequest>,
    ) -> Rpc<pb::GetUserWithBalancesResponse> {
        use pb::get_user_with_balances_request::Key;
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let key = match req.key {
            Some(Key::UserId(v)) => user_key("user_id", &v)?,
            Some(Key::Email(v)) => user_key("email", &v)?,
            Some(Key::Phone(v)) => user_key("phone", &v)?,
            Some(Key::ExternalId(v)) => user_key("external_id", &v)?,
            None => return Err(missing_key("key").into()),
        };
        self.core
            .catch_up(Projection::Balances, req.min_position, wait)
            .await?;
        let mut withheld_fields = Vec::new();
        let (user_id, user) = self
            .directory_user(&ctx, &key, (req.min_position, wait), &mut withheld_fields)
            .await?;
        let wallets = self
            .core
            .projections
            .wallets_of(ctx.tenant.as_str(), "user", &user_id)
            .await
            .map_err(ApiError::from)?;
        // The totals stay: they are amounts, not where the person keeps them.
        let totals = totals(&wallets);
        let mut wallets: Vec<pb::WalletBalances> =
            wallets.iter().map(wallet_balances_to_pb).collect();
        scope::Cut::new(
            "GetUserWithBalancesResponse",
            ctx.caller.scopes,
            &mut withheld_fields,
        )
        .field("wallets", &mut wallets);
        Ok(Response::new(pb::GetUserWithBalancesResponse {
            user: Some(user),
            totals,
            wallets,
            withheld_fields,
        }))
    }

    pub(super) async fn answer_lookup_user(
        &self,
        request: Request<pb::LookupUserRequest>,
    ) -> Rpc<pb::LookupUserResponse> {
        use pb::lookup_user_request::Key;
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let key = match req.key {
            Some(Key::Email(v)) => user_key("email", &v)?,
            Some(Key::Phone(v)) => user_key("phone", &v)?,
            Some(Key::ExternalId(v)) => user_key("external_id", &v)?,
            Some(Key::PersonCode(v)) => {
                require(&ctx, Permission::LookupPersonCode)?;
                user_key("person_code", &v)?
            }
            Some(Key::WalletAddress(v)) => user_key("wallet_address", &v)?,
            None => return Err(missing_key("key").into()),
        };
        scope::check_mask("DirectoryUser", req.read_mask.as_ref(), ctx.caller.scopes)?;
        let mut withheld_fields = Vec::new();
        let (_, user) = self
            .directory_user(&ctx, &key, (req.min_position, wait), &mut withheld_fields)
            .await?;
        Ok(Response::new(pb::LookupUserResponse {
            user: Some(user),
            withheld_fields,
        }))
    }

    pub(super) async fn answer_user_exists(
        &self,
        request: Request<pb::UserExistsRequest>,
    ) -> Rpc<pb::UserExistsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        if !req.person_code.trim().is_empty() {
            require(&ctx, Permission::LookupPersonCode)?;
        }
        let candidates = [
            ("user_id", req.user_id.as_str()),
            ("email", req.email.as_str()),
            ("phone", req.phone.as_str()),
            ("external_id", req.external_id.as_str()),
            ("person_code", req.person_code.as_str()),
            ("wallet_address", req.wallet_address.as_str()),
        ];
        let keys = candidates
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(name, v)| user_key(name, v))
            .collect::<ApiResult<Vec<_>>>()?;
        if keys.is_empty() {
            return Err(missing_key("email").into());
        }
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        for key in keys {
            if let Some(user) = self
                .core
                .projections
                .find_user(ctx.tenant.as_str(), &key)
                .await
                .map_err(ApiError::from)?
            {
                return Ok(Response::new(pb::UserExistsResponse {
                    exists: true,
                    matched_key: key.name().to_string(),
                    user_id: user.user_id,
                }));
            }
        }
        Ok(Response::new(pb::UserExistsResponse::default()))
    }

    pub(super) async fn answer_list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Rpc<pb::ListUsersResponse> {
        use pb::UserSortField as F;
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let sort = match F::try_from(req.sort_by) {
            Ok(F::Unspecified | F::CreatedAt) => SortField::CreatedAt,
            Ok(F::UpdatedAt) => SortField::UpdatedAt,
            Ok(F::Email) => SortField::Email,
            Ok(F::Phone) => SortField::Phone,
            Ok(F::ExternalId) => SortField::ExternalId,
            Ok(F::FirstName) => SortField::FirstName,
            Ok(F::LastName) => SortField::LastName,
            Ok(F::IdentifierEmail) => SortField::IdentifierEmail,
            Ok(F::UserId) => SortField::UserId,
            Ok(F::Active) => SortField::Active,
            Ok(F::Locale) => SortField::Locale,
            Ok(F::AccountAddress) => SortField::AccountAddress,
            Err(_) => {
                return Err(
                    ApiError::from(DomainError::invalid("sort_by", "unknown sort field")).into(),
                )
            }
        };
        if req.search.len() > 200 {
            return Err(
                ApiError::from(DomainError::invalid("search", "at most 200 characters")).into(),
            );
        }
        // A substring search is a (trigram) scan: a few at a time.
        let _slot = if req.search.trim().is_empty() {
            None
        } else {
            Some(self.core.limits.expensive("ListUsers search").await?)
        };
        use pb::DuplicateMode as D;
        let mode = D::try_from(req.duplicates).map_err(|_| {
            ApiError::from(DomainError::invalid("duplicates", "unknown duplicate mode"))
        })?;
        if mode == D::Hard && !ctx.caller.holds(Permission::UpdateUsers) {
            return Err(ApiError::PermissionDenied(Permission::UpdateUsers).into());
        }
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        let query = ListUsers {
            search: Some(req.search),
            active: req.active,
            sort,
            descending: req.descending,
            limit: req.limit,
            page: Some(req.page),
            cursor: Some(req.cursor),
        };
        let page = self
            .core
            .projections
            .list_users(ctx.tenant.as_str(), &query)
            .await
            .map_err(ApiError::from)?
            .map_err(|_| ApiError::foreign_token("cursor"))?;
        let duplicate_groups = match mode {
            D::Unspecified => Vec::new(),
            D::Soft | D::Hard => super::duplicates::groups(&page.users),
        };
        let merges = match mode {
            D::Hard => self.merge_groups(&ctx, &duplicate_groups, wait).await?,
            D::Unspecified | D::Soft => Vec::new(),
        };
        let mut withheld_fields = Vec::new();
        let users = page
            .users
            .iter()
            .map(|u| {
                let mut u = directory_user_to_pb(u);
                scope::cut_directory_user(&mut u, ctx.caller.scopes, &mut withheld_fields);
                u
            })
            .collect();
        Ok(Response::new(pb::ListUsersResponse {
            users,
            next_cursor: page.next_cursor.unwrap_or_default(),
            total: page.total,
            withheld_fields,
            duplicate_groups: duplicate_groups
                .into_iter()
                .map(|g| pb::DuplicateGroup {
                    user_ids: g.users,
                    shared_keys: g.shared.into_iter().map(str::to_string).collect(),
                })
                .collect(),
            merges,
        }))
    }

    pub(super) async fn answer_get_public_profile(
        &self,
        request: Request<pb::GetPublicProfileRequest>,
    ) -> Rpc<pb::GetPublicProfileResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let user = parse_user_id("user_id", &req.user_id)?;
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        let mut found = self
            .core
            .projections
            .public_profiles(ctx.tenant.as_str(), &[user.to_string()], None)
            .await
            .map_err(ApiError::from)?;
        let (user_id, profile) = found
            .pop()
            .ok_or(ApiError::from(DomainError::UserNotFound))?;
        Ok(Response::new(pb::GetPublicProfileResponse {
            profile: Some(pb::PublicProfile {
                user_id,
                public_profile: Some(json_to_struct(&profile)),
            }),
        }))
    }

    pub(super) async fn answer_list_public_profiles(
        &self,
        request: Request<pb::ListPublicProfilesRequest>,
    ) -> Rpc<pb::ListPublicProfilesResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.user_ids.len() > 200 {
            v.push("user_ids", "at most 200 ids");
        }
        let ids: Vec<String> = req
            .user_ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                user_id(&mut v, &format!("user_ids[{i}]"), id).map(|u| u.to_string())
            })
            .collect();
        let filter = match (req.filter_key.trim(), req.filter_value.as_str()) {
            ("", "") => None,
            ("", _) => {
                v.push("filter_key", "is required with filter_value");
                None
            }
            (key, value) => Some(ProfileFilter {
                key: key.to_string(),
                value: value.to_string(),
            }),
        };
        if !ids.is_empty() && !req.page_token.is_empty() {
            v.push("page_token", "user_ids are answered in one page");
        }
        v.finish().map_err(ApiError::from)?;
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        let tenant = ctx.tenant.as_str();
        let projections = &self.core.projections;
        let (profiles, next) = if ids.is_empty() {
            projections
                .public_profiles_page(tenant, filter.as_ref(), req.page_size, &req.page_token)
                .await
                .map_err(ApiError::from)?
                .map_err(|_| ApiError::foreign_token("page_token"))?
        } else {
            let found = projections
                .public_profiles(tenant, &ids, filter.as_ref())
                .await
                .map_err(ApiError::from)?;
            (found, None)
        };
        Ok(Response::new(pb::ListPublicProfilesResponse {
            profiles: profiles
                .into_iter()
                .map(|(user_id, p)| pb::PublicProfile {
                    user_id,
                    public_profile: Some(json_to_struct(&p)),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}
