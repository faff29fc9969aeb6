import Foundation

/// Enough of a file's identity to notice an edit or a replace-by-rename.
public struct FileStamp: Equatable, Sendable {
    let size: Int
    let modified: Date
    let inode: Int

    public init?(path: String) {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        modified = attributes[.modificationDate] as? Date ?? .distantPast
        inode = (attributes[.systemFileNumber] as? NSNumber)?.intValue ?? 0
    }
}
