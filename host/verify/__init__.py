"""Print verification: render a GS1 DataMatrix with physical print defects (render), decode it with
zxing-cpp (decode), grade it after ISO/IEC 15415 (grade). docs/verify.md says where it follows the
standard and where it cannot."""
