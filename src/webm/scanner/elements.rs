//! What each complete element header means where it stands: the stack of open master
//! elements (Segment, Cluster, BlockGroup), which children each may hold, and the events
//! that opening, filling and closing them produce. The byte-level driver in `mod.rs`
//! hands over whole headers and bodies; nothing here sees a split input.

use crate::sink::Sink;

use super::{BlockHead, BlockKind, ClusterTimecode, Event, Scanner, Small, State};
use crate::webm::ebml::{self, id, Header};
use crate::webm::tracks::{self, StreamInfo};
use crate::webm::WebmError;

#[derive(Debug)]
pub(super) enum FrameKind {
    Segment,
    Cluster {
        announced: bool,
    },
    BlockGroup {
        cluster_offset: u64,
        block: Option<BlockHead>,
        referenced: bool,
    },
}

impl FrameKind {
    /// Whether `id` may be a child. Only asked of unknown-size frames, whose end is the
    /// first element that may not be.
    fn may_contain(&self, id: u32) -> bool {
        match self {
            FrameKind::Segment => id != id::EBML && id != id::SEGMENT,
            FrameKind::Cluster { .. } => id != id::EBML && id != id::SEGMENT && !id::is_level1(id),
            FrameKind::BlockGroup { .. } => true,
        }
    }
}

/// An open master element the scanner descended into.
#[derive(Debug)]
pub(super) struct Frame {
    kind: FrameKind,
    offset: u64,
    data_offset: u64,
    /// `None`: unknown size.
    end: Option<u64>,
    /// The nearest known end among this frame and its ancestors: no child may pass it.
    limit: Option<u64>,
}

/// What the scanner knows about the file it is in.
#[derive(Debug)]
pub(super) struct File {
    offset: u64,
    doc_type: String,
    segment_seen: bool,
    init_done: bool,
}

impl Frame {
    /// Whether this is a Segment that may still hold an element starting at `at`.
    pub(super) fn is_segment_reaching(&self, at: u64) -> bool {
        matches!(self.kind, FrameKind::Segment) && self.end.is_none_or(|end| at < end)
    }
}

impl File {
    pub(super) fn is_inited(&self) -> bool {
        self.init_done
    }
}

impl Scanner {
    /// Decides what a complete element header means where it stands.
    pub(super) fn on_header(
        &mut self,
        header: Header,
        offset: u64,
        out: &mut dyn Sink<Event>,
    ) -> Result<(), WebmError> {
        let id = header.id;
        let data_offset = offset
            .checked_add(u64::from(header.len))
            .ok_or(WebmError::Overflow)?;
        let end = match header.size {
            Some(size) => Some(data_offset.checked_add(size).ok_or(WebmError::Overflow)?),
            None => None,
        };

        // An EBML header can only be top-level: whatever was open was cut short (an
        // unknown-size Segment always is) and a new file starts.
        if id == id::EBML {
            self.close_to(0, out);
        }
        while let Some(top) = self.stack.last() {
            if top.end.is_none() && !top.kind.may_contain(id) {
                self.close_top(out);
            } else {
                break;
            }
        }

        let parent_limit = self.stack.last().and_then(|f| f.limit);
        if let Some(parent_end) = parent_limit {
            let elem_end = end.unwrap_or(data_offset);
            if elem_end > parent_end {
                return Err(WebmError::OverflowsParent {
                    offset,
                    id,
                    end: elem_end,
                    parent_end,
                });
            }
        }
        let known_end = || end.ok_or(WebmError::UnknownSize { offset, id });

        let parent = self.stack.last_mut().map(|f| &mut f.kind);
        match (parent, id) {
            (None, id::EBML) => {
                self.file = Some(File {
                    offset,
                    doc_type: String::new(),
                    segment_seen: false,
                    init_done: false,
                });
                self.stream_info = None;
                self.collect(Small::EbmlHeader, offset, data_offset, known_end()?)?;
            }
            (None, id::SEGMENT) => {
                match &mut self.file {
                    Some(file) if !file.segment_seen => file.segment_seen = true,
                    // A second Segment in one file: Matroska allows one.
                    _ => return Err(WebmError::Unexpected { offset, id }),
                }
                self.open(FrameKind::Segment, id, offset, data_offset, end)?;
                out.put(Event::SegmentStart {
                    offset,
                    data_offset,
                    size: header.size,
                });
            }
            (Some(FrameKind::Segment), id::CLUSTER) => {
                if let Some(file) = self.file.as_mut().filter(|f| !f.init_done) {
                    file.init_done = true;
                    out.put(Event::InitSegment {
                        range: file.offset..offset,
                    });
                }
                self.open(
                    FrameKind::Cluster { announced: false },
                    id,
                    offset,
                    data_offset,
                    end,
                )?;
            }
            (Some(FrameKind::Segment), id::INFO) => {
                self.collect(Small::Info, offset, data_offset, known_end()?)?;
            }
            (Some(FrameKind::Segment), id::TRACKS) => {
                self.collect(Small::Tracks, offset, data_offset, known_end()?)?;
            }
            (Some(FrameKind::Cluster { announced: false }), id::TIMECODE) => {
                let end = known_end()?;
                if end - data_offset > 8 {
                    return Err(WebmError::Malformed {
                        offset,
                        reason: "Cluster Timecode longer than 8 bytes",
                    });
                }
                self.collect(Small::Timecode, offset, data_offset, end)?;
            }
            (Some(FrameKind::Cluster { .. }), id::SIMPLE_BLOCK) => {
                let end = known_end()?;
                self.announce_cluster(None, out);
                self.read_block(offset, data_offset, end, false)?;
            }
            (Some(FrameKind::Cluster { .. }), id::BLOCK_GROUP) => {
                let end = known_end()?;
                let cluster_offset = self.stack.last().map_or(0, |f| f.offset);
                self.announce_cluster(None, out);
                let kind = FrameKind::BlockGroup {
                    cluster_offset,
                    block: None,
                    referenced: false,
                };
                self.open(kind, id, offset, data_offset, Some(end))?;
            }
            (Some(FrameKind::BlockGroup { block: None, .. }), id::BLOCK) => {
                let end = known_end()?;
                self.read_block(offset, data_offset, end, true)?;
            }
            (Some(FrameKind::BlockGroup { referenced, .. }), id::REFERENCE_BLOCK) => {
                *referenced = true;
                self.state = State::Skip { end: known_end()? };
            }
            // Void, CRC-32, SeekHead, Cues, Tags, Chapters, Attachments, top-level junk
            // after a file, IDs we do not know: counted past, never buffered.
            _ => self.state = State::Skip { end: known_end()? },
        }
        Ok(())
    }

    fn collect(
        &mut self,
        what: Small,
        offset: u64,
        data_offset: u64,
        end: u64,
    ) -> Result<(), WebmError> {
        let size = end - data_offset;
        let limit = self.limits.max_buffered_element as u64;
        if size > limit {
            return Err(WebmError::TooLarge {
                offset,
                id: match what {
                    Small::EbmlHeader => id::EBML,
                    Small::Info => id::INFO,
                    Small::Tracks => id::TRACKS,
                    Small::Timecode => id::TIMECODE,
                },
                size,
                limit,
            });
        }
        self.body.clear();
        self.state = State::Collect {
            what,
            offset,
            data_offset,
            end,
        };
        Ok(())
    }

    fn read_block(
        &mut self,
        offset: u64,
        data_offset: u64,
        end: u64,
        in_group: bool,
    ) -> Result<(), WebmError> {
        self.state = State::BlockHead {
            offset,
            data_offset,
            end,
            in_group,
        };
        // An empty block would leave BlockHead with nothing to read.
        if end - data_offset < 4 {
            return Err(WebmError::Malformed {
                offset,
                reason: "block shorter than its header",
            });
        }
        Ok(())
    }

    fn open(
        &mut self,
        kind: FrameKind,
        id: u32,
        offset: u64,
        data_offset: u64,
        end: Option<u64>,
    ) -> Result<(), WebmError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(WebmError::TooDeep {
                offset,
                id,
                limit: self.limits.max_depth,
            });
        }
        let parent_limit = self.stack.last().and_then(|f| f.limit);
        let limit = match (end, parent_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.stack.push(Frame {
            kind,
            offset,
            data_offset,
            end,
            limit,
        });
        self.state = State::Header;
        Ok(())
    }

    /// Closes every frame whose end is the current position (an ancestor ending closes
    /// its unknown-size descendants too).
    pub(super) fn close_finished(&mut self, out: &mut dyn Sink<Event>) {
        let pos = self.pos;
        if let Some(depth) = self
            .stack
            .iter()
            .position(|f| f.end.is_some_and(|end| end <= pos))
        {
            self.close_to(depth, out);
        }
    }

    fn close_to(&mut self, depth: usize, out: &mut dyn Sink<Event>) {
        while self.stack.len() > depth {
            self.close_top(out);
        }
    }

    fn close_top(&mut self, out: &mut dyn Sink<Event>) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        match frame.kind {
            FrameKind::Cluster { announced: false } => out.put(Event::ClusterStart {
                offset: frame.offset,
                data_offset: frame.data_offset,
                size: frame.end.map(|end| end - frame.data_offset),
                timecode: None,
            }),
            FrameKind::BlockGroup {
                cluster_offset,
                block: Some(head),
                referenced,
            } => out.put(Event::Block {
                offset: frame.offset,
                cluster_offset,
                track: head.track,
                relative_timecode: head.relative_timecode,
                keyframe: !referenced,
                kind: BlockKind::Group,
            }),
            // A BlockGroup without a Block is invalid, but there is nothing to report.
            _ => {}
        }
    }

    /// Reports the innermost Cluster, if it has not been yet.
    fn announce_cluster(&mut self, timecode: Option<ClusterTimecode>, out: &mut dyn Sink<Event>) {
        if let Some(frame) = self.stack.last_mut() {
            if let FrameKind::Cluster { announced } = &mut frame.kind {
                if !*announced {
                    *announced = true;
                    out.put(Event::ClusterStart {
                        offset: frame.offset,
                        data_offset: frame.data_offset,
                        size: frame.end.map(|end| end - frame.data_offset),
                        timecode,
                    });
                }
            }
        }
    }

    pub(super) fn on_block_head(
        &mut self,
        head: BlockHead,
        offset: u64,
        in_group: bool,
        out: &mut dyn Sink<Event>,
    ) {
        let Some(frame) = self.stack.last_mut() else {
            return;
        };
        if in_group {
            if let FrameKind::BlockGroup { block, .. } = &mut frame.kind {
                *block = Some(head);
            }
        } else {
            out.put(Event::Block {
                offset,
                cluster_offset: frame.offset,
                track: head.track,
                relative_timecode: head.relative_timecode,
                keyframe: head.flags & 0x80 != 0,
                kind: BlockKind::Simple,
            });
        }
    }

    pub(super) fn finish_small(
        &mut self,
        what: Small,
        offset: u64,
        data_offset: u64,
        end: u64,
        data: &[u8],
        out: &mut dyn Sink<Event>,
    ) -> Result<(), WebmError> {
        match what {
            Small::EbmlHeader => {
                let doc_type = ebml::parse_ebml_header(data, data_offset)?;
                if doc_type != "webm" && doc_type != "matroska" {
                    return Err(WebmError::UnsupportedDocType { doc_type });
                }
                if let Some(file) = &mut self.file {
                    file.doc_type.clone_from(&doc_type);
                }
                out.put(Event::EbmlHeader {
                    offset,
                    end,
                    doc_type,
                });
            }
            Small::Info => {
                let (timecode_scale, duration) = tracks::parse_info(data, data_offset)?;
                out.put(Event::Info {
                    range: offset..end,
                    timecode_scale,
                    duration,
                });
            }
            Small::Tracks => {
                let tracks = tracks::parse_tracks(data, data_offset)?;
                let doc_type = self.file.as_ref().map_or("", |f| f.doc_type.as_str());
                self.stream_info = Some(StreamInfo::from_tracks(doc_type, &tracks));
                out.put(Event::Tracks {
                    range: offset..end,
                    tracks,
                });
            }
            Small::Timecode => {
                let value = ebml::read_uint(data, data_offset)?;
                let timecode = ClusterTimecode {
                    value,
                    value_offset: data_offset,
                    value_len: data.len() as u8,
                };
                self.announce_cluster(Some(timecode), out);
            }
        }
        Ok(())
    }
}
