//! Cursor pagination: `?limit=N&cursor=C`, stable id order (ids are time-ordered UUIDv7).

use crate::error::{Error, Result};
use cloud_api::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, PageQuery};
use std::str::FromStr;

/// (items after this id, page size)
pub fn parse<Id: FromStr>(q: &PageQuery) -> Result<(Option<Id>, u32)> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(Error::Invalid(format!(
            "limit: {limit} is out of range: must be between 1 and {MAX_PAGE_LIMIT}"
        )));
    }
    let after = match &q.cursor {
        None => None,
        Some(c) => Some(c.parse::<Id>().map_err(|_| {
            Error::Malformed(format!("cursor: {c:?} is not a cursor this API returned"))
        })?),
    };
    Ok((after, limit))
}

/// The cursor of the next page: the last id, when the page is full.
pub fn next_cursor<T>(items: &[T], limit: u32, id: impl Fn(&T) -> String) -> Option<String> {
    if items.len() == limit as usize {
        items.last().map(id)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_api::InstanceId;

    #[test]
    fn limits_and_cursors() {
        let q = PageQuery::default();
        assert_eq!(parse::<InstanceId>(&q).unwrap(), (None, DEFAULT_PAGE_LIMIT));
        let bad = PageQuery {
            limit: Some(0),
            cursor: None,
        };
        assert!(parse::<InstanceId>(&bad).is_err());
        let bad = PageQuery {
            limit: Some(MAX_PAGE_LIMIT + 1),
            cursor: None,
        };
        assert!(parse::<InstanceId>(&bad).is_err());
        let bad = PageQuery {
            limit: None,
            cursor: Some("zzz".into()),
        };
        assert!(matches!(
            parse::<InstanceId>(&bad),
            Err(Error::Malformed(_))
        ));
        assert_eq!(next_cursor(&[1, 2], 2, |i| i.to_string()), Some("2".into()));
        assert_eq!(next_cursor(&[1], 2, |i| i.to_string()), None);
    }
}
