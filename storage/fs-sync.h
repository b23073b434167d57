/* Durability of a rename: after moving a finished file into place, the directory entry itself
 * must reach the disk, or a crash can forget the new name. */
#ifndef SL_STORAGE_FS_SYNC_H
#define SL_STORAGE_FS_SYNC_H

/* fsyncs the directory holding path. 0, or -errno / SL_ENOMEM with a detail. */
int sl_fsync_parent_dir(const char *path);

#endif
