//! The field scopes a token's `scopes` claim can list. Which scope covers which field of
//! the API is the server's table (`identity-server` access/scope.rs).
//!
//! Tokens without a `scopes` claim reach every field their permissions reach; a token that
//! lists scopes gets those only.

macro_rules! scopes {
    ($($variant:ident = $name:literal,)*) => {
        /// One scope. Its name is what a token's `scopes` claim lists.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Scope {
            $($variant,)*
        }

        impl Scope {
            pub const ALL: &'static [Scope] = &[$(Scope::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Scope::$variant => $name,)*
                }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Scope::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

scopes! {
    Email = "email",
    Phone = "phone",
    Name = "name",
    Profile = "profile",
    ExternalId = "external_id",
    Roles = "roles",
    Identity = "identity",
    Documents = "documents",
    IdentificationLevel = "identification_level",
    Pep = "pep",
    WalletList = "wallet_list",
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u32);

impl Default for Scopes {
    fn default() -> Self {
        Self::all()
    }
}

impl Scopes {
    pub fn all() -> Self {
        Self::of(Scope::ALL)
    }

    pub fn none() -> Self {
        Self(0)
    }

    pub fn of(list: &[Scope]) -> Self {
        Self(list.iter().fold(0, |acc, s| acc | (1 << (*s as u32))))
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & (1 << (s as u32)) != 0
    }

    /// The scopes a token's claim lists; an unknown name is refused, named.
    pub fn parse_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let list = names
            .into_iter()
            .map(|n| Scope::parse(n.trim()).ok_or_else(|| n.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::of(&list))
    }
}
