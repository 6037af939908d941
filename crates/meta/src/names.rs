//! Names owned by the meta crate: consumer group names and member ids. Validated on
//! construction (and on deserialization), so a value of these types is always valid.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::limits::{GROUP_NAME_BYTES_MAX, MEMBER_ID_BYTES_MAX};

/// A consumer group's name: 1 to 128 characters of `[a-zA-Z0-9_.-]`, like a stream name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupName(String);

impl GroupName {
    pub fn new(name: impl Into<String>) -> Result<Self, MetaError> {
        let name = name.into();
        let bad = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
        if name.is_empty() || name.len() > GROUP_NAME_BYTES_MAX {
            return Err(MetaError::invalid(
                "consumer group name",
                format!("{name:?}"),
                format!("must be 1 to {GROUP_NAME_BYTES_MAX} bytes"),
            ));
        }
        if let Some(c) = bad {
            return Err(MetaError::invalid(
                "consumer group name",
                format!("{name:?}"),
                format!("contains {c:?}; only letters, digits, '_', '.' and '-' are allowed"),
            ));
        }
        Ok(GroupName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One consumer instance of a group, chosen by the SDK (for example `host:pid:uuid`):
/// 1 to 256 bytes of printable ASCII.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemberId(String);

impl MemberId {
    pub fn new(id: impl Into<String>) -> Result<Self, MetaError> {
        let id = id.into();
        if id.is_empty()
            || id.len() > MEMBER_ID_BYTES_MAX
            || !id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(MetaError::invalid(
                "member id",
                format!("{id:?}"),
                format!(
                    "must be 1 to {MEMBER_ID_BYTES_MAX} bytes of printable ASCII without spaces"
                ),
            ));
        }
        Ok(MemberId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_conversions {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $name {
            type Error = MetaError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $name::new(s)
            }
        }
        impl From<$name> for String {
            fn from(s: $name) -> String {
                s.0
            }
        }
    };
}

string_conversions!(GroupName);
string_conversions!(MemberId);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(GroupName::new("billing-app_1.v2").is_ok());
        assert!(GroupName::new("").is_err());
        assert!(
            GroupName::new("a b")
                .unwrap_err()
                .to_string()
                .contains("' '")
        );
        assert!(GroupName::new("a".repeat(129)).is_err());
        assert!(MemberId::new("host-1:4242:abc").is_ok());
        assert!(MemberId::new("has space").is_err());
        assert!(MemberId::new("x".repeat(257)).is_err());
    }
}
