//! `slave_manager check …` (same flags): a preflight that tells, before the
//! first cron run, whether the setup works — flags and environment.json, each
//! env's role and resources (its interruption queue too, when
//! `--interruption_queue` is given), the Jenkins CLI and dump, the SQS queue
//! and the master's security group. Read-only: it lists and describes, never
//! changes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::Client as Ec2;

use crate::aws::{self, describe_error};
use crate::config::{Config, EnvConfig};
use crate::jenkins::cli::{discover_endpoint, CliError};
use crate::jenkins::dump::parse_dump;
use crate::tls::CertCheck;
use crate::world::World;

/// One line of the check table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub what: String,
    /// What was found (✔) or what to do about it (✘).
    pub detail: String,
}

fn pass(what: impl Into<String>, detail: impl Into<String>) -> Check {
    Check { ok: true, what: what.into(), detail: detail.into() }
}

fn fail(what: impl Into<String>, detail: impl Into<String>) -> Check {
    Check { ok: false, what: what.into(), detail: detail.into() }
}

/// The check of flags and environment.json alone (no network).
pub fn config_check(result: &Result<Config, String>) -> Check {
    match result {
        Ok(c) => pass(
            "flags and environment.json",
            format!("{} env(s): {}", c.fleet.envs.len(), c.fleet.envs.keys().cloned().collect::<Vec<_>>().join(", ")),
        ),
        Err(e) => fail("flags and environment.json", format!("{e} — fix that flag or key, then check again")),
    }
}

/// Every network check, in order.
pub async fn run(world: &World) -> Vec<Check> {
    let mut checks = Vec::new();
    let base = aws::base_config(&world.config.aws.master_region, world.config.aws.timeout).await;
    for env in world.config.fleet.envs.values() {
        checks.extend(env_checks(world, &base, env).await);
    }
    // Not a fault of the set-up: shown so the operator knows where launches
    // will not go for the next minutes.
    let now = world.clock.now();
    let short = world.shortages.current(now);
    // Said even when empty: an empty line would read like a check run in
    // another directory than the job's workspace.
    let list: Vec<String> = short
        .iter()
        .map(|(o, until)| format!("{o} for {} s more", until.duration_since(now).unwrap_or_default().as_secs()))
        .collect();
    let detail = if list.is_empty() { "no capacity shortages remembered".to_string() } else { list.join("; ") };
    checks.push(pass(format!("capacity shortages ({})", crate::shortage::FILE), detail));
    checks.extend(jenkins_checks(world).await);
    if let (Some(sqs), Some(config)) = (&world.sqs, &world.config.sqs) {
        let (name, owner) = (&config.queue, &config.account_id);
        let what = format!("SQS queue {name} of {owner}");
        checks.push(match sqs.queue_url(name, owner).await {
            Ok(url) => pass(what, url),
            Err(e) => fail(
                what,
                format!("{e} — create the queue in {owner}/{} or let the master's role read it (sqs:GetQueueUrl, sqs:ReceiveMessage, sqs:DeleteMessage)", config.region),
            ),
        });
    }
    if let Some(sg) = &world.config.security_group {
        let group = &sg.group_id;
        let what = format!("master's security group {group} ({})", world.config.aws.master_region);
        checks.push(match world.master_ec2.ipv4_rules(group).await {
            Ok(rules) => {
                // Which rules the manager would never revoke: other ports,
                // other protocols, 443 rules it did not add.
                let required = sg.required_rules();
                let none = Ok(Default::default());
                let unmanaged =
                    crate::plan::security_group::plan_security_group(&required, &none, &Ok(vec![]), &rules).unmanaged;
                let left = if unmanaged.is_empty() {
                    String::new()
                } else {
                    let list: Vec<String> = unmanaged.iter().map(ToString::to_string).collect();
                    format!("; unmanaged, never revoked: {}", list.join(", "))
                };
                pass(what, format!("{} IPv4 rules readable{left}", rules.len()))
            }
            Err(e) => fail(
                what,
                format!("{e} — check jenkins-master-sg-id and --jenkins_master_region, and allow ec2:DescribeSecurityGroups, AuthorizeSecurityGroupIngress and RevokeSecurityGroupIngress to the master (or pass --skip_security_group)"),
            ),
        });
    }
    checks
}

async fn env_checks(world: &World, base: &aws_config::SdkConfig, env: &EnvConfig) -> Vec<Check> {
    let name = &env.name;
    let role = aws::role_arn(env, &world.config.aws.role_name);
    let conf = aws::env_config(base, env, &world.config.aws.role_name).await;
    let mut checks = Vec::new();

    let sts = aws_sdk_sts::Client::new(&conf);
    match sts.get_caller_identity().send().await {
        Ok(id) if id.account() == Some(env.account_id.as_str()) => {
            checks.push(pass(format!("{name}: assume {role}"), id.arn().unwrap_or_default().to_string()))
        }
        Ok(id) => checks.push(fail(
            format!("{name}: assume {role}"),
            format!(
                "credentials land in account {} — fix account-id of {name} in environment.json",
                id.account().unwrap_or("?")
            ),
        )),
        Err(e) => {
            checks.push(fail(
                format!("{name}: assume {role}"),
                format!("{} — create the role in {} trusting the master, and allow sts:AssumeRole on it to the master's role", describe_error(&e), env.account_id),
            ));
            // Nothing else can be read in this env.
            return checks;
        }
    }

    let ec2 = Ec2::new(&conf);
    let fix_permission = |action: &str| format!("allow ec2:{action} to the role {role}");
    checks.push(match ec2.describe_instances().max_results(5).send().await {
        Ok(_) => pass(format!("{name}: describe instances"), format!("allowed in {}", env.region)),
        Err(e) => fail(
            format!("{name}: describe instances"),
            format!("{} — {}", describe_error(&e), fix_permission("DescribeInstances")),
        ),
    });

    let ids: Vec<String> = env.subnets.iter().map(|s| s.id.clone()).collect();
    checks.push(match ec2.describe_subnets().set_subnet_ids(Some(ids.clone())).send().await {
        Ok(out) if out.subnets().len() == ids.len() => pass(format!("{name}: subnets"), ids.join(", ")),
        Ok(out) => fail(
            format!("{name}: subnets"),
            format!("{} of {} found — fix vpcsubnet of {name} in environment.json", out.subnets().len(), ids.len()),
        ),
        Err(e) => fail(
            format!("{name}: subnets"),
            format!("{} — fix vpcsubnet of {name} in environment.json", describe_error(&e)),
        ),
    });

    checks.push(match ec2.describe_security_groups().group_ids(&env.agent_sg).send().await {
        Ok(out) if !out.security_groups().is_empty() => pass(format!("{name}: security group"), env.agent_sg.clone()),
        Ok(_) | Err(_) => fail(
            format!("{name}: security group"),
            format!("{} not found in {} — fix jenkins-sg of {name} in environment.json", env.agent_sg, env.region),
        ),
    });

    match &env.ami {
        None => checks.push(pass(format!("{name}: AMI"), "none in --ami_ids: no agent is created here")),
        Some(ami) => checks.push(match ec2.describe_images().image_ids(ami).send().await {
            Ok(out) if !out.images().is_empty() => pass(format!("{name}: AMI"), ami.clone()),
            Ok(_) | Err(_) => fail(
                format!("{name}: AMI"),
                format!("{ami} not found in {} — fix --ami_ids, or share the AMI with {}", env.region, env.account_id),
            ),
        }),
    }

    let iam = aws_sdk_iam::Client::new(&conf);
    checks.push(match iam.get_instance_profile().instance_profile_name(&env.instance_profile).send().await {
        Ok(_) => pass(format!("{name}: instance profile"), env.instance_profile_arn()),
        Err(e) => fail(
            format!("{name}: instance profile"),
            format!(
                "{} — create instance profile {} in {} (or fix instance-profile in environment.json)",
                describe_error(&e),
                env.instance_profile,
                env.account_id
            ),
        ),
    });

    let key = crate::act::KEY_NAME;
    checks.push(match ec2.describe_key_pairs().key_names(key).send().await {
        Ok(out) if !out.key_pairs().is_empty() => pass(format!("{name}: key pair"), key),
        Ok(_) | Err(_) => fail(
            format!("{name}: key pair"),
            format!("{key} not found — import a key pair named {key} in {}", env.region),
        ),
    });

    if let Some(queue) = &world.config.interruption_queue {
        // Read with the env's role, in its account and region, as a run does.
        let sqs = aws_sdk_sqs::Client::new(&conf);
        let what = format!("{name}: interruption queue {queue}");
        checks.push(match aws::sqs::queue_url(&sqs, queue, &env.account_id).await {
            Ok(url) => pass(what, url),
            Err(e) => fail(
                what,
                format!(
                    "{e} — create the queue in {}/{} with its EventBridge rule (docs/operating.md, Spot interruptions), or allow sqs:GetQueueUrl, ReceiveMessage, DeleteMessage and ChangeMessageVisibility on it to the role {role}",
                    env.account_id, env.region
                ),
            ),
        });
    }
    checks
}

async fn jenkins_checks(world: &World) -> Vec<Check> {
    let c = &world.config.jenkins;
    // The transport itself, not the seam: the host key is checked apart.
    let jenkins = Arc::new(crate::world::jenkins_cli(c, &world.workdir));
    let mut checks = Vec::new();
    let url = c.url.clone();
    let check = c.certificate_check;
    let endpoint = tokio::task::spawn_blocking(move || discover_endpoint(&url, Duration::from_secs(10), check)).await;
    match endpoint {
        Ok(Ok(ep)) if check == CertCheck::Skip => {
            checks.push(pass("Jenkins SSH endpoint", format!("{ep} (certificate not checked: --no_certificate_check)")))
        }
        Ok(Ok(ep)) => checks.push(pass("Jenkins SSH endpoint", ep)),
        Ok(Err(e @ CliError::Certificate { .. })) => {
            // The error names the fix.
            checks.push(fail("Jenkins SSH endpoint", e.to_string()));
            return checks;
        }
        Ok(Err(e)) => {
            checks.push(fail(
                "Jenkins SSH endpoint",
                format!("{e} — enable SSHD in Manage Jenkins → Security (a fixed port), and check --url"),
            ));
            return checks;
        }
        Err(e) => {
            checks.push(fail("Jenkins SSH endpoint", e.to_string()));
            return checks;
        }
    }

    // Before the key is offered: is the SSH server Jenkins?
    let cli = Arc::clone(&jenkins);
    match tokio::task::spawn_blocking(move || cli.check_host_key()).await {
        Ok(Ok(vouched)) => checks.push(pass("Jenkins SSH host key", vouched)),
        Ok(Err(e)) => {
            // The error says who was refused and why.
            checks.push(fail("Jenkins SSH host key", e.to_string()));
            return checks;
        }
        Err(e) => {
            checks.push(fail("Jenkins SSH host key", e.to_string()));
            return checks;
        }
    }

    let cli = Arc::clone(&jenkins);
    let who = tokio::task::spawn_blocking(move || cli.run(&["who-am-i".to_string()], b"")).await;
    let user = &c.user;
    match who.map(|r| r.map(|out| authenticated_as(&out.stdout).map(str::to_string))) {
        Ok(Ok(Some(name))) if same_user(&name, user) => {
            checks.push(pass("Jenkins accepts the key", format!("authenticated as {name}")))
        }
        Ok(Ok(said)) => {
            let said = said.map_or("who-am-i printed no identity".to_string(), |n| format!("authenticated as {n}"));
            checks.push(fail(
                "Jenkins accepts the key",
                format!(
                    "{said}, not {user} — register the public half of --id_rsa on Jenkins user {user} (/user/{user}/configure)"
                ),
            ));
            return checks;
        }
        Ok(Err(e @ (CliError::Certificate { .. } | CliError::JarTls { .. } | CliError::HostKey { .. }))) => {
            // The key was never offered; the error names the fix.
            checks.push(fail("Jenkins accepts the key", e.to_string()));
            return checks;
        }
        Ok(Err(e)) => {
            checks.push(fail(
                "Jenkins accepts the key",
                format!("{e} — register the public half of --id_rsa on Jenkins user {user} (/user/{user}/configure)"),
            ));
            return checks;
        }
        Err(e) => {
            checks.push(fail("Jenkins accepts the key", e.to_string()));
            return checks;
        }
    }

    let cli = Arc::clone(&jenkins);
    let mut words = vec!["groovy".to_string(), "=".to_string()];
    words.extend(world.dump_args());
    let script = c.groovy.clone();
    let dump = tokio::task::spawn_blocking(move || {
        let out = cli.run(&words, script.as_bytes()).map_err(|e| e.to_string())?;
        parse_dump(&out.stdout).map_err(|e| e.to_string())
    })
    .await;
    checks.push(match dump {
        Ok(Ok(d)) => {
            pass("dump script runs and parses", format!("{} queue items, {} nodes", d.queue.len(), d.nodes.len()))
        }
        Ok(Err(e)) => fail(
            "dump script runs and parses",
            format!("{e} — give {user} Overall/Administer (the CLI's groovy command requires it), and check --groovy (the bundled script is the default)"),
        ),
        Err(e) => fail("dump script runs and parses", e.to_string()),
    });
    checks
}

/// The user `who-am-i` names: Jenkins' `WhoAmICommand` prints
/// `Authenticated as: NAME` and then `Authorities:` with one indented line
/// each. The whole rest of that line is the name (`slave-manager2` is not
/// `slave-manager`).
fn authenticated_as(stdout: &str) -> Option<&str> {
    stdout.lines().find_map(|l| l.trim_end_matches('\r').strip_prefix("Authenticated as: "))
}

/// Jenkins' default user-id strategy ignores case: logged in as
/// `Slave-Manager`, who-am-i prints the account's id `slave-manager`. (With a
/// case-sensitive strategy the login itself would have needed the exact id.)
fn same_user(printed: &str, user: &str) -> bool {
    printed.to_lowercase() == user.to_lowercase()
}

/// The ✔/✘ table.
pub fn table(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.what.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(out, "{} {:width$}  {}", if c.ok { "✔" } else { "✘" }, c.what, c.detail);
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    let _ = writeln!(out, "{} ✔, {failed} ✘", checks.len() - failed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_am_i_names_exactly_one_user() {
        let out = "Authenticated as: slave-manager2\nAuthorities:\n  authenticated\n";
        assert_eq!(authenticated_as(out), Some("slave-manager2"));
        assert!(!same_user(authenticated_as(out).unwrap(), "slave-manager"), "a longer name is another user");
        assert!(!same_user("slave", "slave-manager"));
        let out = "Authenticated as: slave-manager\r\nAuthorities:\r\n  authenticated\r\n";
        assert!(same_user(authenticated_as(out).unwrap(), "slave-manager"), "a Windows master's line ends");
        assert!(same_user("slave-manager", "Slave-Manager"), "Jenkins' default id strategy ignores case");
        assert_eq!(authenticated_as("Authorities:\n  Authenticated as: x\n"), None);
        assert_eq!(authenticated_as(""), None);
    }
}
