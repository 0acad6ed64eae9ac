//! Users and their tokens.

use super::*;

pub(super) fn run(command: UserCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
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
            let backend = session.backend_creating(&dir, actor)?;
            let added = backend.add_user(&unseen_api::NewUser {
                id,
                name: name.clone(),
                role: role.clone(),
                org,
            })?;
            if json {
                return print_json(out, &added);
            }
            writeln!(out, "added {role} `{}` ({name})", added.user)?;
            writeln!(out, "token (shown once, keep it secret): {}", added.token)?;
            Ok(())
        }
        UserCommand::List { actor, json, dir } => {
            let listed = session.backend(&dir, actor)?.users()?;
            if json {
                return print_json(out, &listed);
            }
            let rows = listed
                .users
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
            write_table(out, &["USER", "ROLE", "NAME", "ORG", "STATE"], &[], rows)
        }
        UserCommand::Disable {
            id,
            reason,
            actor,
            json,
            dir,
        } => {
            let done = session.backend(&dir, actor)?.disable_user(&id, &reason)?;
            say(
                out,
                json,
                &done,
                format_args!("disabled `{id}`; their token no longer works"),
            )
        }
        UserCommand::Token {
            id,
            actor,
            json,
            dir,
        } => {
            let issued = session.backend(&dir, actor)?.rotate_token(&id)?;
            say(
                out,
                json,
                &issued,
                format_args!(
                    "new token for `{id}` (shown once; the old one no longer works): {}",
                    issued.token
                ),
            )
        }
    }
}
