//! `--shard I/N`: which records a shard encodes. A record belongs to the shard whose index is
//! its position in the corpus modulo N (positions as the manifest counts them: 0-based, bad
//! records counted, blank lines not), so records without an id are assigned as stably as the
//! others, a stream of unknown length (stdin) can be split, and the shards get records of
//! every part of the corpus, whatever its order (a corpus sorted by length or by source does
//! not give one shard all the long texts). The price: every shard reads (and parses) the whole
//! input, to know the positions and the ids (docs/ENCODING.md, "Shards").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a shard's records are chosen, as its manifest names it: the only rule this program
/// writes, and the only one `verify` counts by.
pub const ASSIGNMENT: &str = "position mod count";

/// One shard of N: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Fields", into = "Fields")]
pub struct Shard {
    index: u64,
    count: u64,
}

/// The manifest's form of a shard (checked when read back, so a hand-edited `count` of 0
/// is an error rather than a division by zero).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fields {
    index: u64,
    count: u64,
    assignment: String,
}

impl Shard {
    /// The whole corpus: what a run without `--shard` encodes.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u64, count: u64) -> Result<Self, String> {
        if count == 0 {
            return Err("the shard count N must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "the shard index {index} is not below the count {count} (0 to {})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    pub fn index(self) -> u64 {
        self.index
    }

    pub fn count(self) -> u64 {
        self.count
    }

    /// Whether the record at `position` is this shard's.
    pub fn owns(self, position: u64) -> bool {
        position % self.count == self.index
    }

    /// How many of the positions `0..records` are this shard's.
    pub fn share(self, records: u64) -> u64 {
        if records <= self.index {
            0
        } else {
            (records - self.index - 1) / self.count + 1
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N`: two whole numbers, `0 <= I < N`.
    fn from_str(value: &str) -> Result<Self, String> {
        let malformed = || format!("`{value}` is not I/N, two whole numbers such as 0/4");
        let (index, count) = value.split_once('/').ok_or_else(malformed)?;
        let number = |part: &str| {
            // `u64::from_str` takes a leading `+`; a shard index does not need one.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            part.parse::<u64>()
                .map_err(|_| format!("`{part}` in `{value}` is too large"))
        };
        Self::new(number(index)?, number(count)?)
    }
}

impl TryFrom<Fields> for Shard {
    type Error = String;

    fn try_from(fields: Fields) -> Result<Self, String> {
        if fields.assignment != ASSIGNMENT {
            return Err(format!(
                "shard assignment `{}` is not one this program knows (`{ASSIGNMENT}`)",
                fields.assignment
            ));
        }
        Shard::new(fields.index, fields.count)
    }
}

impl From<Shard> for Fields {
    fn from(shard: Shard) -> Self {
        Fields {
            index: shard.index,
            count: shard.count,
            assignment: ASSIGNMENT.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_position_belongs_to_exactly_one_shard_and_shares_add_up() {
        for count in 1..=5 {
            let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
            for position in 0..40 {
                let owners = shards.iter().filter(|s| s.owns(position)).count();
                assert_eq!(owners, 1, "position {position} of {count} shards");
            }
            for records in 0..40 {
                let total: u64 = shards.iter().map(|s| s.share(records)).sum();
                assert_eq!(total, records, "{records} records over {count} shards");
                for shard in &shards {
                    let owned = (0..records).filter(|&p| shard.owns(p)).count() as u64;
                    assert_eq!(shard.share(records), owned, "{shard} of {records}");
                }
            }
        }
    }

    #[test]
    fn a_shard_is_parsed_from_i_slash_n_and_each_wrong_value_says_why() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!("0/1".parse::<Shard>(), Ok(Shard::WHOLE));
        let cases = [
            ("3/3", "the shard index 3 is not below the count 3 (0 to 2)"),
            ("0/0", "the shard count N must be at least 1"),
            ("1", "`1` is not I/N, two whole numbers such as 0/4"),
            ("a/3", "`a/3` is not I/N"),
            ("-1/3", "`-1/3` is not I/N"),
            ("+1/3", "`+1/3` is not I/N"),
            ("1/3/4", "`1/3/4` is not I/N"),
            ("/3", "`/3` is not I/N"),
            ("1 /3", "`1 /3` is not I/N"),
            ("0/99999999999999999999", "`99999999999999999999` in"),
        ];
        for (value, message) in cases {
            let error = value.parse::<Shard>().unwrap_err();
            assert!(error.starts_with(message), "{value}: {error}");
        }
    }

    #[test]
    fn a_manifests_shard_round_trips_and_a_wrong_one_is_refused() {
        let shard = Shard::new(1, 4).unwrap();
        let json = serde_json::to_value(shard).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"index": 1, "count": 4, "assignment": ASSIGNMENT})
        );
        assert_eq!(serde_json::from_value::<Shard>(json).unwrap(), shard);
        let zero = serde_json::json!({"index": 0, "count": 0, "assignment": ASSIGNMENT});
        let error = serde_json::from_value::<Shard>(zero)
            .unwrap_err()
            .to_string();
        assert!(error.contains("at least 1"), "{error}");
        let other = serde_json::json!({"index": 0, "count": 2, "assignment": "ranges"});
        let error = serde_json::from_value::<Shard>(other)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`ranges` is not one this program knows"),
            "{error}"
        );
    }
}
