//! The guard against a sync that would empty the zone on an external server. A
//! wrong `--selector`, SendingDomains restored without their status, or a block
//! that empties many statuses all make the desired zone small, and a sync would
//! then delete every record customers' CNAMEs point at. A plan that deletes more
//! than a share of the record sets the operator owns on the server is refused
//! until an administrator confirms that many deletions.

/// What one sync may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteGuard {
    /// The largest share, in percent of the owned record sets, one sync may delete.
    pub max_percent: u8,
    /// Deleting this many record sets is always allowed: a small zone, or a few
    /// domains going at once (a domain has four or five record sets).
    pub always_allowed: usize,
    /// An administrator's confirmation: a sync deleting at most this many record
    /// sets is allowed whatever their share.
    pub confirmed: usize,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            max_percent: 50,
            always_allowed: 25,
            confirmed: 0,
        }
    }
}

/// A refused plan: what it would have deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub deletes: usize,
    pub owned: usize,
}

impl Refused {
    /// The share of the owned record sets the plan would delete, in percent.
    pub fn percent(&self) -> usize {
        (self.deletes * 100).checked_div(self.owned).unwrap_or(100)
    }
}

impl DeleteGuard {
    /// Whether a plan deleting `deletes` of the `owned` record sets may go ahead.
    pub fn judge(&self, owned: usize, deletes: usize) -> Result<(), Refused> {
        let within_share = deletes * 100 <= usize::from(self.max_percent) * owned;
        if deletes <= self.always_allowed || deletes <= self.confirmed || within_share {
            Ok(())
        } else {
            Err(Refused { deletes, owned })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_deletions_always_go_ahead() {
        let g = DeleteGuard::default();
        assert_eq!(g.judge(5, 5), Ok(()), "the last domain may go");
        assert_eq!(g.judge(25, 25), Ok(()));
    }

    #[test]
    fn deleting_most_of_a_large_zone_is_refused_until_confirmed() {
        let g = DeleteGuard::default();
        assert_eq!(g.judge(1000, 500), Ok(()), "half is within the share");
        let refused = g.judge(1000, 501).unwrap_err();
        assert_eq!(
            refused,
            Refused {
                deletes: 501,
                owned: 1000
            }
        );
        assert_eq!(refused.percent(), 50);
        assert_eq!(g.judge(1000, 1000).unwrap_err().percent(), 100);
        let confirmed = DeleteGuard {
            confirmed: 1000,
            ..g
        };
        assert_eq!(confirmed.judge(1000, 1000), Ok(()));
        let too_few = DeleteGuard {
            confirmed: 999,
            ..g
        };
        assert!(
            too_few.judge(1000, 1000).is_err(),
            "a confirmation covers a count, not more"
        );
    }

    #[test]
    fn a_share_of_100_allows_everything() {
        let g = DeleteGuard {
            max_percent: 100,
            always_allowed: 0,
            confirmed: 0,
        };
        assert_eq!(g.judge(40, 40), Ok(()));
        assert_eq!(g.judge(0, 0), Ok(()));
    }
}
