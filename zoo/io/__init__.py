"""File I/O shared by data preparation, evaluation and the CLI: mp4 video (PyAV), audio (soundfile), atomic writes."""
from zoo.io.atomic import atomic_dir, atomic_path
from zoo.io.audio import load_audio, save_audio
from zoo.io.video import read_video, write_video

__all__ = ["atomic_dir", "atomic_path", "load_audio", "save_audio", "read_video", "write_video"]
