//! Users and their tokens.

use super::*;

pub(super) fn run(
    command: UserCommand,
    token: Option<&str>,
    _runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    match command {
        UserCommand::Add {
            id,
            name,
            role,
            org,
            actor,
            json,
            dir,
        } => {
            let domain = open_or_create(&dir)?;
            // The first admin of a new directory adds itself without a token.
            let actor = match (actor, token) {
                (None, None) => None,
                (actor, token) => Some(who(&domain, actor, token)?),
            };
            let token = domain.add_user(
                actor.as_deref(),
                &id,
                &name,
                Role::parse(&role).map_err(anyhow::Error::msg)?,
                &org,
            )?;
            if json {
                writeln!(out, "{}", json!({"user": id, "token": token}))?;
            } else {
                writeln!(out, "added {role} `{id}` ({name})")?;
                writeln!(out, "token (shown once, keep it secret): {token}")?;
            }
            Ok(())
        }
        UserCommand::List { actor, json, dir } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let users = domain.users(&actor)?;
            if json {
                writeln!(out, "{}", json!({"users": users}))?;
            }
            if !json {
                let rows = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.id.clone(),
                            u.role.to_string(),
                            u.name.clone(),
                            u.org.clone(),
                            if u.disabled { "disabled" } else { "enabled" }.into(),
                        ]
                    })
                    .collect();
                write_table(out, &["USER", "ROLE", "NAME", "ORG", "STATE"], &[], rows)?;
            }
            Ok(())
        }
        UserCommand::Disable {
            id,
            reason,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            domain.disable_user(&actor, &id, &reason)?;
            say(
                out,
                json,
                json!({"user": id, "disabled": true}),
                format_args!("disabled `{id}`; their token no longer works"),
            )
        }
        UserCommand::Token {
            id,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let token = domain.rotate_token(&actor, &id)?;
            if json {
                writeln!(out, "{}", json!({"user": id, "token": token}))?;
            } else {
                writeln!(
                    out,
                    "new token for `{id}` (shown once; the old one no longer works): {token}"
                )?;
            }
            Ok(())
        }
    }
}
