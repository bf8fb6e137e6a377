//! Example operator `most-common`: the vote of an ensemble.

use xcs_guest::Error;

/// The most common of a non-empty list of strings; a tie goes to the one
/// that occurs first.
#[xcs_guest::operator(deterministic)]
fn most_common(votes: Vec<String>) -> Result<String, Error> {
    let mut best: Option<(&String, usize)> = None;
    for (position, vote) in votes.iter().enumerate() {
        if votes[..position].contains(vote) {
            continue; // counted at its first occurrence
        }
        let count = votes[position..]
            .iter()
            .filter(|other| *other == vote)
            .count();
        if best.is_none_or(|(_, most)| count > most) {
            best = Some((vote, count));
        }
    }
    best.map(|(vote, _)| vote.clone())
        .ok_or_else(|| Error::invalid_input("no votes"))
}
