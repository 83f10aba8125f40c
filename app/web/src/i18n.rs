//! The UI's words in English and Chinese. Each key is declared once with both texts, so a
//! missing translation is a compile error.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// The BCP 47 tag for `<html lang>`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// From a stored setting or the browser's language list (Chinese when it comes first).
    pub fn from_tag(tag: &str) -> Lang {
        if tag.to_ascii_lowercase().starts_with("zh") {
            Lang::Zh
        } else {
            Lang::En
        }
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }
}

macro_rules! strings {
    ($($key:ident => $en:expr, $zh:expr;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Key { $($key),* }

        impl Key {
            pub const ALL: &'static [Key] = &[$(Key::$key),*];

            pub fn text(self, lang: Lang) -> &'static str {
                match (self, lang) {
                    $((Key::$key, Lang::En) => $en, (Key::$key, Lang::Zh) => $zh,)*
                }
            }
        }
    };
}

strings! {
    Tagline => "Search your photos by describing them. Everything runs in this browser tab; nothing is uploaded.",
        "用文字描述来搜索你的照片。一切都在本页面内运行，不上传任何内容。";
    SwitchLang => "中文", "English";
    SwitchLangLabel => "切换到中文 (switch to Chinese)", "Switch to English (切换到英文)";
    ModelHeading => "Model", "模型";
    ModelNone => "No model loaded yet.", "尚未加载模型。";
    ModelDownloading => "Downloading", "正在下载";
    ModelChecking => "Checking the file's hash…", "正在校验文件哈希…";
    ModelLoading => "Loading the model into the engine…", "正在将模型载入引擎…";
    ModelReady => "Ready", "就绪";
    ModelRefused => "Model refused", "模型被拒绝";
    ModelFromCache => "from this device's cache (no download)", "来自本机缓存（无需下载）";
    ModelPick => "Use another model file…", "使用其他模型文件…";
    ModelPickLabel => "Choose a brivl model file (.safetensors)", "选择 brivl 模型文件（.safetensors）";
    ModelReloadSite => "Use the site's model", "使用网站自带模型";
    RunsOnGpu => "Runs on WebGPU", "在 WebGPU 上运行";
    RunsOnCpu => "This browser has no WebGPU: using the slower CPU path", "此浏览器没有 WebGPU：使用较慢的 CPU 路径";
    Details => "Details", "详细信息";
    RunsOnCpuChosen => "Running on the CPU (chosen)", "在 CPU 上运行（已选择）";
    AlbumHeading => "Album", "相册";
    DropHere => "Drop photos or folders here", "将照片或文件夹拖放到这里";
    DropZoneLabel => "Drop zone for photos and folders", "照片和文件夹拖放区";
    PickPhotos => "Choose photos…", "选择照片…";
    PickFolder => "Choose a folder…", "选择文件夹…";
    TryDemo => "Try the demo album", "试试示例相册";
    Indexed => "photos indexed", "张照片已索引";
    Queued => "waiting", "等待中";
    Duplicates => "already known (same content)", "已存在（内容相同）";
    Pause => "Pause", "暂停";
    Resume => "Resume", "继续";
    Cancel => "Cancel", "取消";
    ClearIndex => "Clear index", "清空索引";
    ClearConfirm => "Delete every stored embedding and thumbnail?", "删除所有已存储的向量和缩略图？";
    PerSecond => "photos/s", "张/秒";
    TimeLeft => "left", "剩余";
    Paused => "Paused", "已暂停";
    Skipped => "Skipped files", "已跳过的文件";
    NeedModel => "Load a model to start indexing.", "请先加载模型再开始索引。";
    SearchHeading => "Search", "搜索";
    QueryLabel => "Describe the photo", "描述照片内容";
    QueryPlaceholder => "e.g. 海边的日落", "例如：海边的日落";
    QueryUsed => "Query used", "实际查询";
    QueryUsedHelp => "What the model reads; edit it to refine the search.", "模型实际读取的文字，可编辑以调整搜索。";
    SearchButton => "Search", "搜索";
    MinScore => "Min. score", "最低分";
    Results => "results", "个结果";
    NoResults => "No photo scores above the minimum.", "没有照片的得分高于最低分。";
    Similar => "Similar", "相似照片";
    SimilarTo => "Photos similar to", "与此相似的照片：";
    Close => "Close", "关闭";
    Score => "score", "得分";
    ThumbOnly => "Shown from the stored thumbnail; choose its folder again to see the original.",
        "显示的是已存储的缩略图；重新选择其文件夹可查看原图。";
    // ---- the search-first page (issue 16) ----
    SidePanel => "Album and model", "相册与模型";
    AllPhotos => "All photos", "全部照片";
    Photos => "photos", "张照片";
    ShowMore => "Show more", "显示更多";
    Advanced => "Advanced", "高级选项";
    EmptyAlbum => "No photos yet. Choose a folder (or drop one on the album panel) to start: photos are read where they are, nothing is copied or uploaded.",
        "还没有照片。选择一个文件夹（或拖放到相册面板）即可开始：照片在原处读取，不会被复制或上传。";
    NotIndexed => "These photos were added without folder access and were not indexed before the page was reloaded. Choose their folder again to index them:",
        "这些照片是在没有文件夹访问权限的情况下添加的，页面重新加载前未完成索引。请重新选择其文件夹以完成索引：";
    NeedPermission => "To read your photos in place again, this page needs your permission for:",
        "要再次在原处读取照片，本页需要你重新授权以下文件夹：";
    AllowFolders => "Allow access again", "重新授权";
    Loading => "Reading the index…", "正在读取索引…";
    NoticeReading => "Reading files…", "正在读取文件…";
    NoticeNew => "new", "张新照片";
    NoticeKnown => "already known", "张已存在";
    NoticeTooLarge => "too large to index", "个文件过大，无法索引";
    NoticeNotPhotos => "not photos (left out)", "个文件不是照片（未收录）";
    OtherTab => "Indexing runs in another tab of this site; this tab waits and goes on when that one is done.",
        "本网站的另一个标签页正在索引；本页会等待，待其完成后继续。";
    NoticeCancelled => "Indexing cancelled; the photos already indexed are kept.", "已取消索引；已索引的照片会保留。";
    NoticeOtherModel => "photos are being embedded again with this model; until that is done, search finds only those done so far. The previous model's embeddings are kept until then.",
        "张照片正在用当前模型重新生成向量；完成前，搜索只包含已完成的照片。完成前会保留原模型的向量。";
    Privacy => "Private by design: the page talks only to the site it came from.",
        "隐私优先：页面只与其来源网站通信。";
    // Converting a checkpoint and the model list (ui/models.rs).
    ConvertHeading => "Convert the released checkpoint", "转换官方发布的检查点";
    ConvertHelp => "Drop or choose the .pth and its vocab.txt (and a config.json, if the model has one). It is converted in this tab and kept on this device; nothing is uploaded.",
        "拖放或选择 .pth 文件及其 vocab.txt（如有 config.json 也一并选择）。转换在本页内完成并保存在本机，不上传任何内容。";
    ConvertPick => "Choose .pth and vocab.txt…", "选择 .pth 和 vocab.txt…";
    ConvertPickLabel => "Choose the checkpoint (.pth), its vocab.txt and config.json", "选择检查点（.pth）、vocab.txt 和 config.json";
    ConvertWeights => "Weights", "权重格式";
    ConvertStart => "Convert", "转换";
    ConvertRead => "read", "已读取";
    ConvertSteps => "tensors", "个张量";
    ConvertCancelled => "Conversion cancelled; nothing was kept.", "已取消转换，未保留任何文件。";
    ConvertFailed => "Conversion failed", "转换失败";
    ConvertNeedBoth => "Choose both the .pth checkpoint and its vocab.txt.", "请同时选择 .pth 检查点和 vocab.txt。";
    ModelsHeading => "Models on this device", "本机上的模型";
    ModelsUse => "Use", "使用";
    ModelsDelete => "Delete", "删除";
    ModelsActive => "in use", "使用中";
    ModelsDemo => "demo", "示例";
    ModelsSite => "from this site", "来自本网站";
    ModelsConverted => "converted here", "在此转换";
    ModelsDropped => "dropped file", "拖入的文件";
    ModelsImage => "image", "图像";
    ModelsWidth => "embedding", "向量维度";
    ModelsStorage => "Storage used", "已用存储";
    ModelsOf => "of", "/";
    ModelsPersistent => "kept by the browser (persistent)", "浏览器将保留（持久存储）";
    ModelsNotPersistent => "may be cleared by the browser when space runs low", "空间不足时可能被浏览器清除";
    SwitchAgain => "photos of the index were embedded by another model: they will be embedded again (from their originals, or from their thumbnails where an original cannot be read) to be searched with",
        "张照片由其他模型生成向量：将重新生成向量（读取原图；原图不可读时使用缩略图），之后才能用以下模型搜索：";
    SwitchUse => "Use it?", "仍要使用吗？";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_both_texts() {
        for k in Key::ALL {
            assert!(!k.text(Lang::En).is_empty() && !k.text(Lang::Zh).is_empty(), "{k:?}");
        }
        assert_eq!(Lang::from_tag("zh-TW"), Lang::Zh);
        assert_eq!(Lang::from_tag("en-GB"), Lang::En);
    }
}
