//! Text columns arrive as raw bytes in the column's character set; records carry UTF-8.

use std::borrow::Cow;

use encoding_rs::Encoding;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// utf8mb3 / utf8mb4: validated, copied as is.
    Utf8,
    /// The `binary` pseudo charset: not text (BINARY, VARBINARY, BLOB).
    Binary,
    /// UCS-2 and UTF-16 (big-endian, as MySQL stores them).
    Utf16Be,
    Utf16Le,
    Utf32Be,
    /// Single- and multi-byte legacy charsets decoded with encoding_rs. MySQL's `latin1` is
    /// Windows-1252, which is what encoding_rs implements under that label.
    Legacy(&'static Encoding),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CharsetError {
    #[error("character set `{0}` is not supported by the publisher")]
    Unsupported(String),
    #[error("bytes are not valid {0}")]
    Invalid(&'static str),
}

impl Charset {
    /// Maps a MySQL/MariaDB character set name (as in `information_schema`).
    pub fn from_mysql_name(name: &str) -> Result<Charset, CharsetError> {
        let enc = |label: &str| {
            Encoding::for_label(label.as_bytes())
                .map(Charset::Legacy)
                .ok_or_else(|| CharsetError::Unsupported(name.to_string()))
        };
        match name.to_ascii_lowercase().as_str() {
            "utf8" | "utf8mb3" | "utf8mb4" => Ok(Charset::Utf8),
            "binary" => Ok(Charset::Binary),
            "ucs2" | "utf16" => Ok(Charset::Utf16Be),
            "utf16le" => Ok(Charset::Utf16Le),
            "utf32" => Ok(Charset::Utf32Be),
            "latin1" | "ascii" => enc("windows-1252"),
            "latin2" => enc("iso-8859-2"),
            "latin5" => enc("iso-8859-9"),
            "latin7" => enc("iso-8859-13"),
            "greek" => enc("iso-8859-7"),
            "hebrew" => enc("iso-8859-8"),
            "cp1250" => enc("windows-1250"),
            "cp1251" => enc("windows-1251"),
            "cp1256" => enc("windows-1256"),
            "cp1257" => enc("windows-1257"),
            "cp866" => enc("ibm866"),
            "koi8r" => enc("koi8-r"),
            "koi8u" => enc("koi8-u"),
            "macroman" => enc("macintosh"),
            "tis620" => enc("windows-874"),
            "sjis" | "cp932" => enc("shift_jis"),
            "ujis" | "eucjpms" => enc("euc-jp"),
            "euckr" => enc("euc-kr"),
            "gbk" | "gb2312" => enc("gbk"),
            "gb18030" => enc("gb18030"),
            "big5" => enc("big5"),
            _ => Err(CharsetError::Unsupported(name.to_string())),
        }
    }

    pub fn is_binary(self) -> bool {
        self == Charset::Binary
    }

    pub fn decode(self, bytes: &[u8]) -> Result<Cow<'_, str>, CharsetError> {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| CharsetError::Invalid("UTF-8")),
            Charset::Binary => Err(CharsetError::Invalid("text (the column is binary)")),
            Charset::Utf16Be => decode_units(
                bytes,
                2,
                "UTF-16",
                |c| u16::from_be_bytes([c[0], c[1]]) as u32,
                true,
            ),
            Charset::Utf16Le => decode_units(
                bytes,
                2,
                "UTF-16LE",
                |c| u16::from_le_bytes([c[0], c[1]]) as u32,
                true,
            ),
            Charset::Utf32Be => decode_units(
                bytes,
                4,
                "UTF-32",
                |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                false,
            ),
            Charset::Legacy(enc) => {
                let (text, had_errors) = enc.decode_without_bom_handling(bytes);
                if had_errors {
                    Err(CharsetError::Invalid(enc.name()))
                } else {
                    Ok(text)
                }
            }
        }
    }
}

fn decode_units(
    bytes: &[u8],
    width: usize,
    what: &'static str,
    unit: impl Fn(&[u8]) -> u32,
    utf16: bool,
) -> Result<Cow<'static, str>, CharsetError> {
    if !bytes.len().is_multiple_of(width) {
        return Err(CharsetError::Invalid(what));
    }
    let units = bytes.chunks_exact(width).map(unit);
    let text: Result<String, _> = if utf16 {
        char::decode_utf16(units.map(|u| u as u16))
            .collect::<Result<String, _>>()
            .map_err(|_| ())
    } else {
        units.map(|u| char::from_u32(u).ok_or(())).collect()
    };
    text.map(Cow::Owned)
        .map_err(|_| CharsetError::Invalid(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_is_windows_1252() {
        let cs = Charset::from_mysql_name("latin1").expect("latin1");
        assert_eq!(cs.decode(b"Zo\xeb \x80").expect("decode"), "Zoë €");
    }

    #[test]
    fn utf16_and_utf32() {
        let bytes = [0xd8, 0x3d, 0xde, 0x42];
        assert_eq!(Charset::Utf16Be.decode(&bytes).expect("utf16"), "🙂");
        assert_eq!(
            Charset::Utf32Be.decode(&[0, 1, 0xf6, 0x42]).expect("utf32"),
            "🙂"
        );
        assert!(Charset::Utf16Be.decode(&[0xd8]).is_err());
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_replacement() {
        assert_eq!(
            Charset::Utf8.decode(b"a\xffb"),
            Err(CharsetError::Invalid("UTF-8"))
        );
        assert!(Charset::from_mysql_name("swe7").is_err());
    }
}
