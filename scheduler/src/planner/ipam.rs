//! IPAM: gives each new instance in a subnet its address and MAC before it is planned. It runs
//! in the planner task, which handles one batch at a time, so two requests never get the same
//! address; the unique index on (subnet, address) guards the store anyway.

use super::batch::{Item, What};
use crate::app::App;
use crate::error::Error;
use crate::services::netcheck;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use uuid::Uuid;

/// A subnet's range and the addresses taken (in the store or earlier in this batch).
struct Pool {
    name: String,
    net: ipnet::Ipv4Net,
    used: HashSet<Ipv4Addr>,
}

async fn load(app: &App, subnet: Uuid) -> Result<Pool, Error> {
    let rec = app.store.subnet_by_id(subnet).await.map_err(|e| match e {
        crate::store::StoreError::NotFound => {
            Error::Invalid(format!("subnet_id: subnet {subnet} was deleted"))
        }
        other => other.into(),
    })?;
    let net: ipnet::Ipv4Net = rec
        .cidr
        .parse()
        .map_err(|_| Error::internal(anyhow::anyhow!("stored subnet cidr {:?}", rec.cidr)))?;
    let used = app
        .store
        .subnet_used_ips(subnet)
        .await?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    Ok(Pool {
        name: rec.name,
        net,
        used,
    })
}

/// Fills in `private_ip` and `mac` of every create in a subnet; answers (and drops) those
/// that cannot have an address.
pub(super) async fn assign(app: &App, items: Vec<Item>) -> Vec<Item> {
    if !items
        .iter()
        .any(|i| matches!(&i.what, What::Create(n) if n.subnet_id.is_some()))
    {
        return items;
    }
    let mut pools: HashMap<Uuid, Result<Pool, String>> = HashMap::new();
    // Requested addresses first, so the automatic ones never take them.
    let mut ordered: Vec<Item> = Vec::with_capacity(items.len());
    let (requested, rest): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|i| matches!(&i.what, What::Create(n) if n.private_ip.is_some()));
    let mut out = Vec::new();
    for mut it in requested.into_iter().chain(rest) {
        let (subnet, requested_ip) = match &it.what {
            What::Create(n) => match n.subnet_id {
                Some(s) => (s, n.private_ip.clone()),
                None => {
                    ordered.push(it);
                    continue;
                }
            },
            What::Move { .. } => {
                ordered.push(it);
                continue;
            }
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = pools.entry(subnet) {
            slot.insert(load(app, subnet).await.map_err(|e| e.to_string()));
        }
        match pick(pools.get_mut(&subnet), requested_ip.as_deref()) {
            Err(e) => it.answer(Err(e)),
            Ok(ip) => {
                if let What::Create(new) = &mut it.what {
                    new.private_ip = Some(ip.to_string());
                    new.mac = Some(netcheck::mac_for(ip));
                }
                out.push(it);
            }
        }
    }
    ordered.extend(out);
    ordered
}

/// The address for one request: the requested one if free, else the lowest free one; marks
/// it used.
fn pick(
    pool: Option<&mut Result<Pool, String>>,
    requested: Option<&str>,
) -> Result<Ipv4Addr, Error> {
    let pool = match pool {
        Some(Ok(p)) => p,
        Some(Err(msg)) => {
            return Err(Error::Unavailable(format!(
                "cannot allocate an address: {msg}"
            )));
        }
        None => return Err(Error::Unavailable("cannot allocate an address".into())),
    };
    let ip = match requested {
        Some(s) => {
            let ip: Ipv4Addr = s
                .parse()
                .map_err(|_| Error::Invalid(format!("private_ip: {s:?} is not an IPv4 address")))?;
            if pool.used.contains(&ip) {
                return Err(Error::AlreadyExists(format!(
                    "private_ip: {ip} is already used in subnet {:?}",
                    pool.name
                )));
            }
            ip
        }
        None => netcheck::lowest_free(pool.net, &pool.used).ok_or_else(|| {
            Error::InsufficientCapacity(format!(
                "subnet {:?} ({}) has no free addresses",
                pool.name, pool.net
            ))
        })?,
    };
    pool.used.insert(ip);
    Ok(ip)
}
