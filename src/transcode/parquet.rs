//! Parquet output through the `parquet` crate's low-level writer: one flat, typed schema,
//! rows buffered per column up to one row group, then written out. Memory is about one
//! row group whatever the file size.

use parquet::basic::{
    Compression, GzipLevel, LogicalType, Repetition, TimeUnit, Type as Physical, ZstdLevel,
};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use std::io::{self, Write};
use std::sync::Arc;

use super::table::{Column, ColumnType, Value};
use super::tabular::RowSink;

/// Parquet's page compression, as the config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetCompression {
    Snappy,
    Zstd,
    Gzip,
    None,
}

impl ParquetCompression {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "snappy" => ParquetCompression::Snappy,
            "zstd" => ParquetCompression::Zstd,
            "gzip" => ParquetCompression::Gzip,
            "none" => ParquetCompression::None,
            _ => return None,
        })
    }

    fn codec(self) -> Compression {
        match self {
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
            ParquetCompression::Gzip => Compression::GZIP(GzipLevel::default()),
            ParquetCompression::None => Compression::UNCOMPRESSED,
        }
    }
}

fn to_io(e: ParquetError) -> io::Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => *io,
            Err(other) => io::Error::other(other),
        },
        other => io::Error::other(other),
    }
}

/// One column's values of the current row group.
enum Values {
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Double(Vec<f64>),
    Bool(Vec<bool>),
    Bytes(Vec<ByteArray>),
}

struct Buffer {
    values: Values,
    /// Definition levels: 1 present, 0 missing (for nullable columns only).
    defs: Vec<i16>,
    nullable: bool,
}

/// A row group is also written once its values take this much memory, so wide rows or
/// long strings cannot stretch `row_group_rows` beyond the memory bound.
const ROW_GROUP_BYTES: usize = 32 << 20;

/// Writes rows as a Parquet file into `out`.
pub struct ParquetWriter<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    buffers: Vec<Buffer>,
    rows: usize,
    row_group_rows: usize,
    /// Memory the buffered values take, roughly.
    bytes: usize,
}

fn field(column: &Column) -> Result<Arc<Type>, ParquetError> {
    let (physical, logical) = match column.ty {
        ColumnType::Integer => (Physical::INT64, Some(LogicalType::integer(64, true))),
        ColumnType::Float => (Physical::DOUBLE, None),
        ColumnType::Boolean => (Physical::BOOLEAN, None),
        ColumnType::Date => (Physical::INT32, Some(LogicalType::Date)),
        ColumnType::Timestamp => (
            Physical::INT64,
            Some(LogicalType::timestamp(true, TimeUnit::MICROS)),
        ),
        ColumnType::String => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
    };
    let repetition = if column.nullable {
        Repetition::OPTIONAL
    } else {
        Repetition::REQUIRED
    };
    Ok(Arc::new(
        Type::primitive_type_builder(&column.name, physical)
            .with_repetition(repetition)
            .with_logical_type(logical)
            .build()?,
    ))
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn new(
        out: W,
        columns: &[Column],
        compression: ParquetCompression,
        row_group_rows: usize,
    ) -> io::Result<Self> {
        let fields = columns
            .iter()
            .map(field)
            .collect::<Result<Vec<_>, _>>()
            .map_err(to_io)?;
        let schema = Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .map_err(to_io)?;
        let props = WriterProperties::builder()
            .set_compression(compression.codec())
            // No version in it: an upgrade must not change the bytes of a file whose
            // upload is being resumed.
            .set_created_by("s3spool".to_string())
            .build();
        let writer =
            SerializedFileWriter::new(out, Arc::new(schema), Arc::new(props)).map_err(to_io)?;
        let buffers = columns
            .iter()
            .map(|c| Buffer {
                values: match c.ty {
                    ColumnType::Integer | ColumnType::Timestamp => Values::Int64(Vec::new()),
                    ColumnType::Date => Values::Int32(Vec::new()),
                    ColumnType::Float => Values::Double(Vec::new()),
                    ColumnType::Boolean => Values::Bool(Vec::new()),
                    ColumnType::String => Values::Bytes(Vec::new()),
                },
                defs: Vec::new(),
                nullable: c.nullable,
            })
            .collect();
        Ok(ParquetWriter {
            writer,
            buffers,
            rows: 0,
            row_group_rows: row_group_rows.max(1),
            bytes: 0,
        })
    }

    /// Writes the buffered rows as one row group.
    fn flush(&mut self) -> Result<(), ParquetError> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut group = self.writer.next_row_group()?;
        for buffer in &mut self.buffers {
            let mut column = group
                .next_column()?
                .ok_or_else(|| ParquetError::General("fewer columns than buffers".into()))?;
            let defs = buffer.nullable.then_some(&buffer.defs[..]);
            match &mut buffer.values {
                Values::Int64(v) => {
                    column.typed::<Int64Type>().write_batch(v, defs, None)?;
                    v.clear();
                }
                Values::Int32(v) => {
                    column.typed::<Int32Type>().write_batch(v, defs, None)?;
                    v.clear();
                }
                Values::Double(v) => {
                    column.typed::<DoubleType>().write_batch(v, defs, None)?;
                    v.clear();
                }
                Values::Bool(v) => {
                    column.typed::<BoolType>().write_batch(v, defs, None)?;
                    v.clear();
                }
                Values::Bytes(v) => {
                    column.typed::<ByteArrayType>().write_batch(v, defs, None)?;
                    // Release the strings, not only forget them.
                    *v = Vec::new();
                }
            }
            column.close()?;
            buffer.defs.clear();
        }
        group.close()?;
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }

    /// Writes the last row group and the footer.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush().map_err(to_io)?;
        self.writer.close().map_err(to_io)?;
        Ok(())
    }
}

impl<W: Write + Send> RowSink for ParquetWriter<W> {
    fn write_row(&mut self, values: &[Value<'_>]) -> io::Result<()> {
        for (buffer, value) in self.buffers.iter_mut().zip(values) {
            let present = !matches!(value, Value::Null);
            if buffer.nullable {
                buffer.defs.push(i16::from(present));
            }
            match (&mut buffer.values, *value) {
                (_, Value::Null) => {}
                (Values::Int64(v), Value::Integer(n) | Value::Timestamp(n)) => v.push(n),
                (Values::Int32(v), Value::Date(d)) => v.push(d),
                (Values::Double(v), Value::Float(f)) => v.push(f),
                (Values::Bool(v), Value::Boolean(b)) => v.push(b),
                (Values::Bytes(v), Value::String(s)) => {
                    // The string, its handle and the allocator's share.
                    self.bytes += s.len() + 48;
                    v.push(ByteArray::from(s))
                }
                _ => return Err(io::Error::other("a value does not match its column type")),
            }
        }
        self.rows += 1;
        self.bytes += 8 * values.len();
        if self.rows >= self.row_group_rows || self.bytes >= ROW_GROUP_BYTES {
            self.flush().map_err(to_io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn every_compression_writes_a_file_that_reads_back() {
        use parquet::record::RowAccessor;
        let columns = [
            Column {
                name: "n".into(),
                ty: ColumnType::Integer,
                nullable: true,
            },
            Column {
                name: "s".into(),
                ty: ColumnType::String,
                nullable: false,
            },
        ];
        for compression in ["snappy", "zstd", "gzip", "none"] {
            let codec = ParquetCompression::from_name(compression).unwrap();
            let mut out = Vec::new();
            let mut writer = ParquetWriter::new(&mut out, &columns, codec, 3).unwrap();
            for i in 0..10 {
                let n = if i % 4 == 0 {
                    Value::Null
                } else {
                    Value::Integer(i)
                };
                writer.write_row(&[n, Value::String("text")]).unwrap();
            }
            writer.finish().unwrap();
            let reader = SerializedFileReader::new(bytes::Bytes::from(out)).unwrap();
            assert_eq!(reader.metadata().num_row_groups(), 4, "{compression}");
            let column = reader.metadata().row_group(0).column(0);
            assert_eq!(column.compression(), codec.codec(), "{compression}");
            let rows: Vec<_> = reader
                .get_row_iter(None)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(rows.len(), 10);
            assert!(rows[4].get_long(0).is_err(), "row 4 is null");
            assert_eq!(rows[5].get_long(0).unwrap(), 5);
            assert_eq!(rows[9].get_string(1).unwrap(), "text");
        }
    }

    #[test]
    fn long_strings_close_row_groups_before_the_row_count_does() {
        let columns = [Column {
            name: "blob".into(),
            ty: ColumnType::String,
            nullable: false,
        }];
        let mut out = Vec::new();
        let mut writer =
            ParquetWriter::new(&mut out, &columns, ParquetCompression::None, 1000).unwrap();
        let big = "x".repeat(1 << 20);
        for _ in 0..40 {
            writer.write_row(&[Value::String(&big)]).unwrap();
        }
        writer.finish().unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(out)).unwrap();
        let groups = reader.metadata().num_row_groups();
        let rows: i64 = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .sum();
        assert_eq!(rows, 40);
        assert_eq!(groups, 2, "40 MiB of values in groups of at most 32 MiB");
    }
}
