//! Users and roles: adding users and checking who may do what.

use super::*;

impl Domain {
    /// The role of an enabled user.
    pub fn role_of(&self, user: &str) -> Result<Role, DomainError> {
        role_in(&lock(&self.db), user)
    }

    pub fn require(
        &self,
        actor: &str,
        needed: Role,
        action: &'static str,
    ) -> Result<(), DomainError> {
        check_role(actor, self.role_of(actor)?, &[needed], action)
    }

    pub(crate) fn require_any(
        &self,
        actor: &str,
        allowed: &[Role],
        action: &'static str,
    ) -> Result<Role, DomainError> {
        let role = self.role_of(actor)?;
        check_role(actor, role, allowed, action)?;
        Ok(role)
    }

    /// Creates a user with a real name and an organisation, and returns
    /// their first bearer token (shown once; only its hash is kept). The
    /// first user of a fresh directory must be an admin and creates itself;
    /// afterwards only admins add users.
    pub fn add_user(
        &self,
        actor: Option<&str>,
        id: &str,
        name: &str,
        role: Role,
        org: &str,
    ) -> Result<String, DomainError> {
        let count = store::users::count(&lock(&self.db))?;
        let actor = match actor {
            Some(a) => {
                self.require(a, Role::Admin, "add users")?;
                a.to_string()
            }
            None if count == 0 && role == Role::Admin => id.to_string(),
            None => {
                return Err(DomainError::ActingAdminRequired);
            }
        };
        if name.trim().is_empty() {
            return Err(DomainError::NameRequired {
                user: id.to_string(),
            });
        }
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(DomainError::BadUserId { id: id.to_string() });
        }
        self.commit_recorded(&actor, "user.created", |tx| {
            let inserted =
                store::users::insert(tx, id, name, role.as_str(), org, &self.now_rfc3339())?;
            if !inserted {
                return Err(DomainError::Exists {
                    what: "user",
                    id: id.to_string(),
                });
            }
            Ok(Change::Record(
                json!({"user": id, "name": name, "role": role.as_str(), "org": org}),
                (),
            ))
        })?;
        self.issue_token(&actor, id)
    }
}
