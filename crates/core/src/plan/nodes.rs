//! Jenkins nodes and the instances they run on.

use crate::model::{Instance, Node};

/// The Jenkins node of an instance: by the `InstanceID=` of its description,
/// else by its name ending in `-<private ip>` (the original's `ENV-10.0.1.7`)
/// or `-<instance id>` (swarm's `LABELS-i-0abc`) — but never a node whose
/// own `InstanceID=` names another instance: envs in different accounts
/// share address ranges, so `prod-10.0.1.7` may be another env's agent.
pub(super) fn node_of<'a>(nodes: &'a [Node], inst: &Instance) -> Option<&'a Node> {
    // No allocation here: this runs for every instance against every node.
    let ends_with_dash = |name: &str, tail: &str| name.strip_suffix(tail).is_some_and(|head| head.ends_with('-'));
    nodes.iter().find(|n| n.instance_id.as_deref() == Some(inst.id.as_str())).or_else(|| {
        nodes.iter().filter(|n| n.instance_id.is_none()).find(|n| {
            ends_with_dash(&n.name, &inst.id)
                || inst.private_ip.as_deref().is_some_and(|ip| ends_with_dash(&n.name, ip))
        })
    })
}

/// What follows the last `-` of a node name (the IP in `ENV-10.0.1.7`).
pub(super) fn node_name_tail(name: &str) -> Option<&str> {
    name.rsplit_once('-').map(|(_, tail)| tail)
}

/// A build is running on it: never stop or terminate it. `None` (an older
/// dump script) keeps the original behaviour.
pub(super) fn is_busy(node: &Node) -> bool {
    node.busy_executors.is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceState::*;
    use crate::plan::test_kit::*;

    #[test]
    fn node_is_found_by_instance_id_then_by_ip_or_id_suffix() {
        let inst = agent("i-1", Running, "dev").ip("10.0.1.7");
        let by_id = Node { instance_id: Some("i-1".into()), name: "whatever".into(), ..Node::default() };
        let by_ip = Node { name: "dev-10.0.1.7".into(), ..Node::default() };
        let by_suffix = Node { name: "dev-i-1".into(), ..Node::default() };
        let other_ip = Node { name: "dev-10.0.1.77".into(), ..Node::default() };
        assert_eq!(node_of(&[by_ip.clone(), by_id.clone()], &inst), Some(&by_id));
        assert_eq!(node_of(&[other_ip.clone(), by_ip.clone()], &inst), Some(&by_ip));
        assert_eq!(node_of(std::slice::from_ref(&by_suffix), &inst), Some(&by_suffix));
        assert_eq!(node_of(&[other_ip], &inst), None);
    }

    #[test]
    fn a_node_whose_instance_id_names_another_instance_is_never_found_by_its_name() {
        // dev's agent 10.0.1.7 and prod's node of the same IP, another account.
        let inst = agent("i-dev", Running, "dev").ip("10.0.1.7");
        let prods = Node { instance_id: Some("i-prod".into()), name: "prod-10.0.1.7".into(), ..Node::default() };
        let by_id_suffix = Node { instance_id: Some("i-prod".into()), name: "x-i-dev".into(), ..Node::default() };
        assert_eq!(node_of(&[prods.clone(), by_id_suffix], &inst), None);
        let unlabelled = Node { name: "dev-10.0.1.7".into(), ..Node::default() };
        assert_eq!(node_of(&[prods, unlabelled.clone()], &inst), Some(&unlabelled));
    }
}
