//! What a file says about itself: parsing the Info and Tracks elements, and the
//! [`StreamInfo`] summary of them that the server passes on.

use super::ebml::{children, id, Child};
use super::WebmError;

/// Matroska's default TimecodeScale: timecodes count milliseconds.
pub(crate) const DEFAULT_TIMECODE_SCALE: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
    /// Any other TrackType value (subtitles, metadata...), kept as written.
    Other(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSettings {
    pub pixel_width: u64,
    pub pixel_height: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioSettings {
    pub sampling_frequency: f64,
    pub channels: u64,
}

/// One TrackEntry.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub number: u64,
    pub uid: u64,
    pub kind: TrackKind,
    /// As written, e.g. `V_VP8`, `V_VP9`, `V_AV1`, `A_OPUS`, `V_MPEG4/ISO/AVC`.
    pub codec_id: String,
    pub video: Option<VideoSettings>,
    pub audio: Option<AudioSettings>,
}

/// A flat summary of a file's first video and first audio track, cheap to clone and to
/// map onto JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamInfo {
    /// `webm` or `matroska`.
    pub doc_type: String,
    pub video: Option<VideoStream>,
    pub audio: Option<AudioStream>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoStream {
    pub track: u64,
    pub codec_id: String,
    pub width: u64,
    pub height: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioStream {
    pub track: u64,
    pub codec_id: String,
    pub sampling_frequency: f64,
    pub channels: u64,
}

impl StreamInfo {
    pub fn from_tracks(doc_type: &str, tracks: &[Track]) -> StreamInfo {
        let video = tracks.iter().find(|t| t.kind == TrackKind::Video).map(|t| {
            let v = t.video.unwrap_or(VideoSettings {
                pixel_width: 0,
                pixel_height: 0,
            });
            VideoStream {
                track: t.number,
                codec_id: t.codec_id.clone(),
                width: v.pixel_width,
                height: v.pixel_height,
            }
        });
        let audio = tracks.iter().find(|t| t.kind == TrackKind::Audio).map(|t| {
            let a = t.audio.unwrap_or(DEFAULT_AUDIO);
            AudioStream {
                track: t.number,
                codec_id: t.codec_id.clone(),
                sampling_frequency: a.sampling_frequency,
                channels: a.channels,
            }
        });
        StreamInfo {
            doc_type: doc_type.to_owned(),
            video,
            audio,
        }
    }
}

/// For log lines: `V_VP8 640x480, A_OPUS 48000 Hz 2 ch`.
impl std::fmt::Display for StreamInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.video, &self.audio) {
            (None, None) => f.write_str("no audio or video track"),
            (video, audio) => {
                if let Some(v) = video {
                    write!(f, "{} {}x{}", v.codec_id, v.width, v.height)?;
                }
                if let Some(a) = audio {
                    let comma = if video.is_some() { ", " } else { "" };
                    write!(
                        f,
                        "{comma}{} {} Hz {} ch",
                        a.codec_id, a.sampling_frequency, a.channels
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The spec's defaults, for an Audio element that omits them.
const DEFAULT_AUDIO: AudioSettings = AudioSettings {
    sampling_frequency: 8000.0,
    channels: 1,
};

/// Info's body: TimecodeScale (default 1 ms) and Duration, if the muxer knew it.
pub(crate) fn parse_info(body: &[u8], base: u64) -> Result<(u64, Option<f64>), WebmError> {
    let mut scale = DEFAULT_TIMECODE_SCALE;
    let mut duration = None;
    for child in children(body, base) {
        let child = child?;
        match child.id {
            id::TIMECODE_SCALE => scale = child.uint()?,
            // The spec wants a positive Duration; a muxer's placeholder (0, NaN) says
            // nothing, and keeping NaN out keeps events comparable.
            id::DURATION => duration = Some(child.float()?).filter(|d| d.is_finite() && *d > 0.0),
            _ => {}
        }
    }
    // A zero scale would turn every timecode into 0 ns; a recorder must not trust it.
    if scale == 0 {
        return Err(WebmError::Malformed {
            offset: base,
            reason: "TimecodeScale is 0",
        });
    }
    Ok((scale, duration))
}

/// Tracks' body: one [`Track`] per TrackEntry, in file order.
pub(crate) fn parse_tracks(body: &[u8], base: u64) -> Result<Vec<Track>, WebmError> {
    let mut tracks = Vec::new();
    for child in children(body, base) {
        let child = child?;
        if child.id == id::TRACK_ENTRY {
            tracks.push(parse_track_entry(&child)?);
        }
    }
    Ok(tracks)
}

fn parse_track_entry(entry: &Child<'_>) -> Result<Track, WebmError> {
    let mut number = None;
    let mut uid = 0;
    let mut track_type = None;
    let mut codec_id = String::new();
    let mut video = None;
    let mut audio = None;
    for child in entry.children() {
        let child = child?;
        match child.id {
            id::TRACK_NUMBER => number = Some(child.uint()?),
            id::TRACK_UID => uid = child.uint()?,
            id::TRACK_TYPE => track_type = Some(child.uint()?),
            id::CODEC_ID => codec_id = child.string(),
            id::VIDEO => video = Some(parse_video(&child)?),
            id::AUDIO => audio = Some(parse_audio(&child)?),
            _ => {}
        }
    }
    // Blocks name their track by number, so an entry without one indexes nothing.
    let number = number.filter(|&n| n != 0).ok_or(WebmError::Malformed {
        offset: entry.offset,
        reason: "TrackEntry without a non-zero TrackNumber",
    })?;
    // TrackType is mandatory, but a muxer that forgets it still says what it means
    // through its Video or Audio child.
    let kind = match track_type {
        Some(1) => TrackKind::Video,
        Some(2) => TrackKind::Audio,
        Some(other) => TrackKind::Other(other),
        None if video.is_some() => TrackKind::Video,
        None if audio.is_some() => TrackKind::Audio,
        None => TrackKind::Other(0),
    };
    Ok(Track {
        number,
        uid,
        kind,
        codec_id,
        video,
        audio,
    })
}

fn parse_video(video: &Child<'_>) -> Result<VideoSettings, WebmError> {
    let mut settings = VideoSettings {
        pixel_width: 0,
        pixel_height: 0,
    };
    for child in video.children() {
        let child = child?;
        match child.id {
            id::PIXEL_WIDTH => settings.pixel_width = child.uint()?,
            id::PIXEL_HEIGHT => settings.pixel_height = child.uint()?,
            _ => {}
        }
    }
    Ok(settings)
}

fn parse_audio(audio: &Child<'_>) -> Result<AudioSettings, WebmError> {
    let mut settings = DEFAULT_AUDIO;
    for child in audio.children() {
        let child = child?;
        match child.id {
            id::SAMPLING_FREQUENCY => {
                let rate = child.float()?;
                // No decoder can use it, and NaN would make the track unequal to itself.
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(WebmError::Malformed {
                        offset: child.offset,
                        reason: "SamplingFrequency is not a positive number",
                    });
                }
                settings.sampling_frequency = rate;
            }
            id::CHANNELS => settings.channels = child.uint()?,
            _ => {}
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webm::testutil::*;

    #[test]
    fn parses_video_and_audio_tracks() {
        let body = [
            video_track(1, 0xABCD, "V_VP8", 640, 480),
            audio_track(2, 7, "A_OPUS", 48000.0, 2),
        ]
        .concat();
        let tracks = parse_tracks(&body, 0).unwrap();
        assert_eq!(
            tracks,
            vec![
                Track {
                    number: 1,
                    uid: 0xABCD,
                    kind: TrackKind::Video,
                    codec_id: "V_VP8".into(),
                    video: Some(VideoSettings {
                        pixel_width: 640,
                        pixel_height: 480
                    }),
                    audio: None,
                },
                Track {
                    number: 2,
                    uid: 7,
                    kind: TrackKind::Audio,
                    codec_id: "A_OPUS".into(),
                    video: None,
                    audio: Some(AudioSettings {
                        sampling_frequency: 48000.0,
                        channels: 2
                    }),
                },
            ]
        );
        let info = StreamInfo::from_tracks("webm", &tracks);
        assert_eq!(info.video.as_ref().unwrap().width, 640);
        assert_eq!(info.audio.as_ref().unwrap().sampling_frequency, 48000.0);
        assert_eq!(info.doc_type, "webm");
        assert_eq!(info.to_string(), "V_VP8 640x480, A_OPUS 48000 Hz 2 ch");
        let audio_only = StreamInfo::from_tracks("webm", &tracks[1..]);
        assert_eq!(audio_only.to_string(), "A_OPUS 48000 Hz 2 ch");
        assert_eq!(StreamInfo::default().to_string(), "no audio or video track");
    }

    #[test]
    fn audio_defaults_and_missing_track_type() {
        // An Audio element with no children, and no TrackType.
        let entry = el(
            id::TRACK_ENTRY,
            &[uint(id::TRACK_NUMBER, 3), el(id::AUDIO, &[])].concat(),
        );
        let tracks = parse_tracks(&entry, 0).unwrap();
        assert_eq!(tracks[0].kind, TrackKind::Audio);
        assert_eq!(tracks[0].audio, Some(DEFAULT_AUDIO));
    }

    #[test]
    fn track_without_number_is_malformed() {
        let entry = el(id::TRACK_ENTRY, &uint(id::TRACK_TYPE, 1));
        assert!(matches!(
            parse_tracks(&entry, 0),
            Err(WebmError::Malformed { offset: 0, .. })
        ));
    }

    #[test]
    fn info_defaults_and_duration() {
        assert_eq!(parse_info(&[], 0), Ok((1_000_000, None)));
        let body = info_body(500_000, Some(3008.0));
        assert_eq!(parse_info(&body, 0), Ok((500_000, Some(3008.0))));
        assert!(parse_info(&uint(id::TIMECODE_SCALE, 0), 0).is_err());
        for bogus in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                parse_info(&float(id::DURATION, bogus), 0),
                Ok((1_000_000, None))
            );
        }
    }

    #[test]
    fn bogus_sampling_frequency_is_malformed() {
        for bogus in [0.0, -48000.0, f64::NAN] {
            let body = audio_track(2, 1, "A_OPUS", bogus, 2);
            assert!(matches!(
                parse_tracks(&body, 0),
                Err(WebmError::Malformed { .. })
            ));
        }
    }
}
