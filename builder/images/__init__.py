"""Role images: the contract every reader goes through, and build-images' content key, .deb cache,
diskimage-builder run and progress view, and the whole-disk assembly (disk, with gpt, esp, ext4
and bootloader)."""
