//! A replica's generation with a hole: a node whose first viewer joins at the live edge
//! reads the generation's first frames (through its init segment) and then the frames
//! from the newest keyframe cluster on, not what lies between. Live joiners are served
//! from it as they are anywhere; a viewer that needs the generation whole waits until
//! the replica has fetched the rest and the generation is rebuilt around it.

use super::{gap, media_end, Accepted, Buffer, FrameError};
use crate::protocol::FrameHeader;
use crate::stream::generation::{Frame, Generation};
use bytes::Bytes;

impl Buffer {
    /// A replica joining the log at the live edge: `frame`, of the current generation,
    /// starts past what the generation holds (its first frames, through the init
    /// segment), and its bytes from `join_at` on open a keyframe-led cluster or fragment.
    /// The bytes between become a hole that no viewer is sent: a live joiner starts at
    /// `join_at` or later, anyone else once [`Buffer::fill_hole`] has filled it. A frame
    /// that does not start past the end is an ordinary chunk.
    pub fn accept_after_hole(
        &mut self,
        frame: Bytes,
        join_at: u64,
    ) -> Result<Accepted, FrameError> {
        if self.stopped {
            return Err(FrameError::Stopped);
        }
        let header = FrameHeader::parse(&frame).expect("caller checked the header");
        let limit = self.limits.max_generation_bytes;
        let Some(current) = self.current.as_mut().filter(|g| g.id == header.generation) else {
            return self.accept_chunk(frame);
        };
        if header.offset <= current.len {
            return self.accept_chunk(frame);
        }
        let end = media_end(&header, &frame);
        let fits = current.hole.is_none()
            && current.holds_init()
            && (header.offset..end).contains(&join_at);
        if !fits {
            return Err(gap(current, header.offset));
        }
        if end > limit {
            return Err(FrameError::BufferFull {
                generation: current.id,
                limit,
            });
        }
        let learned = current.push_after_hole(Frame::new(header.offset, frame), end, join_at);
        self.learned(learned);
        Ok(Accepted::Appended)
    }

    /// Whether the current generation is `generation` and holds its whole init segment
    /// (where a replica may leave a hole).
    pub fn holds_init_of(&self, generation: u64) -> bool {
        self.current
            .as_ref()
            .is_some_and(|g| g.id == generation && g.holds_init())
    }

    /// The hole of the current generation, if it has one: (its generation, from, to).
    pub fn hole(&self) -> Option<(u64, u64, u64)> {
        let current = self.current.as_ref()?;
        current.hole.map(|(from, to)| (current.id, from, to))
    }

    /// Fills the current generation's hole with `head`, the generation's frames from its
    /// start (as the publisher's node accepted them) up to where the hole ends: the
    /// generation is rebuilt whole around the same shared frames, and viewers reading it
    /// go on from the same offsets. False, and nothing changed, when `head` is not
    /// exactly that.
    pub fn fill_hole(&mut self, head: Vec<Bytes>) -> bool {
        let Some(current) = self.current.as_ref() else {
            return false;
        };
        let Some((_, hole_end)) = current.hole else {
            return false;
        };
        let mut whole = Generation::new(current.id, self.gauge.clone());
        for frame in head {
            let Ok(header) = FrameHeader::parse(&frame) else {
                return false;
            };
            let end = media_end(&header, &frame);
            if header.generation != current.id || header.offset != whole.len || end > hole_end {
                return false;
            }
            whole.push(Frame::new(header.offset, frame), end);
        }
        if whole.len != hole_end {
            return false;
        }
        for frame in current.frames.iter().filter(|f| f.offset >= hole_end) {
            whole.push(frame.clone(), frame.end());
        }
        let old = self.take_current();
        debug_assert!(old.is_some_and(|old| old.len == whole.len));
        self.current = Some(whole);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, frame, payloads, read};
    use super::super::{read_appended, BufferLimits};
    use super::*;
    use crate::protocol::{OutFrame, HEADER_LEN};

    const CHROME: &[u8] = include_bytes!("../../../integration/fixtures/chrome-vp8-opus.webm");
    const BLOB: usize = 4000;
    const CHUNK: usize = 5000;

    /// The publisher's frames: a blob, then chunks.
    fn published() -> Vec<Bytes> {
        let mut frames = vec![frame(3, 0, &CHROME[..BLOB])];
        let mut offset = BLOB;
        for piece in CHROME[BLOB..].chunks(CHUNK) {
            frames.push(frame(3, offset as u64, piece));
            offset += piece.len();
        }
        frames
    }

    fn buffer() -> Buffer {
        Buffer::new(BufferLimits {
            max_generation_bytes: 1 << 20,
        })
    }

    /// Where the publisher's index puts the newest keyframe cluster, and the frame
    /// holding its first byte.
    fn newest_keyframe(frames: &[Bytes]) -> (u64, u64, usize) {
        let mut whole = buffer();
        whole.accept_blob(frames[0].clone()).unwrap();
        for chunk in &frames[1..] {
            whole.accept_chunk(chunk.clone()).unwrap();
        }
        let (init, keyframe) = whole.current.as_ref().unwrap().index.live_start().unwrap();
        let holding = frames
            .iter()
            .rposition(|f| FrameHeader::parse(f).unwrap().offset <= keyframe)
            .unwrap();
        (init, keyframe, holding)
    }

    fn offset_of(frame: &Bytes) -> u64 {
        FrameHeader::parse(frame).unwrap().offset
    }

    #[test]
    fn a_generation_joined_at_a_keyframe_serves_live_joiners_and_nobody_the_hole() {
        let frames = published();
        let (init, keyframe, holding) = newest_keyframe(&frames);
        assert!(holding > 2, "something to skip");
        let mut b = buffer();
        let mut before_anything = b.cursor(None);
        b.accept_blob(frames[0].clone()).unwrap();
        assert!(b.holds_init_of(3));
        assert!(!b.holds_init_of(4));
        let hole_end = offset_of(&frames[holding]);
        assert_eq!(
            b.accept_after_hole(frames[holding].clone(), keyframe),
            Ok(Accepted::Appended)
        );
        for chunk in &frames[holding + 1..] {
            assert_eq!(b.accept_chunk(chunk.clone()), Ok(Accepted::Appended));
        }
        assert_eq!(b.hole(), Some((3, BLOB as u64, hole_end)));

        // A live joiner gets the init, then the keyframe cluster on.
        let live: Vec<Bytes> = b
            .live_snapshot()
            .unwrap()
            .iter()
            .map(OutFrame::to_bytes)
            .collect();
        assert_eq!(payloads(&live[..1]), &CHROME[..init as usize]);
        assert_eq!(offset_of(&live[1]), keyframe);
        assert_eq!(payloads(&live[1..]), &CHROME[keyframe as usize..]);
        // Nobody resumes inside the hole, or before it (what follows is not there).
        assert!(!b.can_resume(at(3, BLOB as u64)));
        assert!(!b.can_resume(at(3, hole_end - 1)));
        assert!(b.can_resume(at(3, hole_end)));
        assert!(b.can_resume(at(3, CHROME.len() as u64)));
        // A chunk socket that came before the generation reads from past the hole.
        let got = read(&b, &mut before_anything);
        assert_eq!(offset_of(&got[0]), hole_end);
        assert_eq!(payloads(&got), &CHROME[hole_end as usize..]);
    }

    #[test]
    fn a_filled_hole_makes_the_generation_whole_under_the_viewers_reading_it() {
        let frames = published();
        let (_, keyframe, holding) = newest_keyframe(&frames);
        let last = frames.len() - 1;
        let mut b = buffer();
        b.accept_blob(frames[0].clone()).unwrap();
        b.accept_after_hole(frames[holding].clone(), keyframe)
            .unwrap();
        for chunk in &frames[holding + 1..last] {
            b.accept_chunk(chunk.clone()).unwrap();
        }
        // A live viewer at the end, reading without the lock.
        let mut cursor = b.cursor(None);
        let mut reader = b.log_reader(&cursor).expect("at the end");

        // A head that misses a frame, or runs past the hole, changes nothing.
        let mut gappy = frames[..holding].to_vec();
        gappy.remove(1);
        assert!(!b.fill_hole(gappy));
        assert!(!b.fill_hole(frames[..=holding].to_vec()));
        assert!(b.hole().is_some());

        assert!(b.fill_hole(frames[..holding].to_vec()));
        assert_eq!(b.hole(), None);
        assert_eq!(
            payloads(&b.snapshot()),
            &CHROME[..offset_of(&frames[last]) as usize]
        );
        assert_eq!(
            b.snapshot()[1].as_ptr(),
            frames[1].as_ptr(),
            "shared, not copied"
        );
        assert!(b.can_resume(at(3, BLOB as u64)));
        let live = b.live_snapshot().unwrap();
        assert_eq!(
            offset_of(&live[1].to_bytes()),
            keyframe,
            "the same join point"
        );

        // The viewer goes back through the buffer and carries on exactly.
        b.accept_chunk(frames[last].clone()).unwrap();
        let mut out = Vec::new();
        assert!(!read_appended(&mut reader, &mut cursor, u64::MAX, &mut out));
        assert!(out.is_empty());
        let got = read(&b, &mut cursor);
        assert_eq!(got, vec![frames[last].clone()]);
    }

    #[test]
    fn a_frame_that_cannot_leave_a_hole_is_refused_or_taken_as_a_chunk() {
        let frames = published();
        let (_, keyframe, holding) = newest_keyframe(&frames);
        // Before the init segment is in, no hole.
        let mut b = buffer();
        b.accept_blob(frame(3, 0, &CHROME[..20])).unwrap();
        assert!(!b.holds_init_of(3));
        assert!(matches!(
            b.accept_after_hole(frames[holding].clone(), keyframe),
            Err(FrameError::Gap { .. })
        ));
        // A join point outside the frame is no join point.
        let mut b = buffer();
        b.accept_blob(frames[0].clone()).unwrap();
        assert!(b
            .accept_after_hole(frames[holding].clone(), offset_of(&frames[holding + 1]))
            .is_err());
        // A frame that starts where the generation ends is just the next chunk.
        assert_eq!(
            b.accept_after_hole(frames[1].clone(), keyframe),
            Ok(Accepted::Appended)
        );
        assert_eq!(b.hole(), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Wherever the publisher's pieces were cut and whichever keyframe cluster the
        /// replica skips to: live joiners get the init and a keyframe cluster on, the
        /// hole is never sent, and the filled generation is the recording, with a viewer
        /// reading it carrying on exactly.
        #[test]
        fn any_cuts_and_any_keyframe_cluster(
            blob_len in 2000usize..8000,
            sizes in proptest::collection::vec(300usize..12_000, 1..40),
            pick in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut frames = vec![frame(3, 0, &CHROME[..blob_len])];
            let (mut offset, mut i) = (blob_len, 0);
            while offset < CHROME.len() {
                let end = (offset + sizes[i % sizes.len()]).min(CHROME.len());
                frames.push(frame(3, offset as u64, &CHROME[offset..end]));
                (offset, i) = (end, i + 1);
            }
            // Keyframe clusters past the blob, as the publisher's index names them.
            let mut index = crate::stream::index::MediaIndex::new();
            let mut points = Vec::new();
            for f in &frames {
                index.feed(&f[HEADER_LEN..]);
                if let Some((_, point)) = index.live_start() {
                    if point >= blob_len as u64 && points.last() != Some(&point) {
                        points.push(point);
                    }
                }
            }
            proptest::prop_assume!(!points.is_empty());
            let keyframe = points[pick.index(points.len())];
            let holding = frames
                .iter()
                .rposition(|f| offset_of(f) <= keyframe)
                .unwrap();
            let last = frames.len() - 1;
            // Something skipped, and a chunk left to come after the fill.
            proptest::prop_assume!(holding > 1 && holding < last);

            let mut b = buffer();
            b.accept_blob(frames[0].clone()).unwrap();
            b.accept_after_hole(frames[holding].clone(), keyframe).unwrap();
            for chunk in &frames[holding + 1..last] {
                b.accept_chunk(chunk.clone()).unwrap();
            }
            let hole_end = offset_of(&frames[holding]);
            proptest::prop_assert_eq!(b.hole(), Some((3, blob_len as u64, hole_end)));
            let live: Vec<Bytes> = b.live_snapshot().unwrap().iter().map(OutFrame::to_bytes).collect();
            let init = payloads(&live[..1]);
            proptest::prop_assert!(init[..] == CHROME[..init.len()]);
            let from = offset_of(&live[1]);
            proptest::prop_assert!(from >= keyframe && points.contains(&from));
            proptest::prop_assert!(payloads(&live[1..])[..] == CHROME[from as usize..offset_of(&frames[last]) as usize]);

            let mut cursor = b.cursor(None);
            let mut reader = b.log_reader(&cursor);
            proptest::prop_assert!(b.fill_hole(frames[..holding].to_vec()));
            proptest::prop_assert_eq!(b.hole(), None);
            proptest::prop_assert!(payloads(&b.snapshot())[..] == CHROME[..offset_of(&frames[last]) as usize]);
            b.accept_chunk(frames[last].clone()).unwrap();
            // The viewer's lock-free reader was closed by the fill: it goes back through
            // the buffer, from where it stood.
            let mut out = Vec::new();
            let reader = reader.as_mut().expect("at the end");
            proptest::prop_assert!(!read_appended(reader, &mut cursor, u64::MAX, &mut out));
            proptest::prop_assert_eq!(read(&b, &mut cursor), vec![frames[last].clone()]);
        }
    }
}
