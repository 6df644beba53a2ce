"""Chinese name families (issue 14, round 4): every surname, person-role labels, minority names,
a surname alone, pet names. Examples written for these tests (not taken from any corpus)."""

import pytest

from apps.gateway.deid import names


def found(text: str) -> set[str]:
    return {text[s:e] for s, e in names._chinese_names(text)}


@pytest.mark.parametrize(
    ("text", "name"),
    [
        # 1. every surname, a rare one needing context (a title, a label, a pause before)
        ("消化科宁医师查房", "宁"),
        ("请放射科姬医生会诊", "姬"),
        ("“龙医生，您好”", "龙"),
        ("门诊：患者巩女士复诊", "巩"),
        # 2. person-role labels with a colon
        ("审核：雷振东　检验者：蓝", "雷振东"),
        ("审核：雷振东　检验者：蓝", "蓝"),
        ("处方签：医师：欧　护士：鞠　药师：单　调配：华", "单"),
        ("处方签：医师：欧　护士：鞠　药师：单　调配：华", "华"),
        ("告知书　谈话医生签字：翁立群　日期", "翁立群"),
        ("| 姓名 | 欧阳娜娜 | 性别 | 女 |", "欧阳娜娜"),
        ("投保人姓名：Zhou Lanying 周兰英\n", "Zhou Lanying 周兰英"),
        # 3. minority names
        ("出院小结：患者格桑旺姆，女，藏族，52岁", "格桑旺姆"),
        ("姓名：阿布都·买买提　性别：男", "阿布都·买买提"),
        ("家属苏和（夫）陪同", "苏和"),
        ("会诊医生：巴图　时间", "巴图"),
        ("吐尔洪·艾力，男，41岁，维吾尔族", "吐尔洪·艾力"),
        # 4. a surname alone after an occupation, in a signature column
        ("联系病房护士甘，已告知", "甘"),
        ("随行助手欧阳。", "欧阳"),
        ("| 日期 | 操作 | 签名 |\n| 3-1 | 换药 | 邱红梅 |\n| 3-2 | 换药 | 晏 |", "邱红梅"),
        ("| 日期 | 操作 | 签名 |\n| 3-1 | 换药 | 邱红梅 |\n| 3-2 | 换药 | 晏 |", "晏"),
        # 5. pet names, 大名/小名, 本人, a bed number, a list after a name
        ("陪护护工阿芬，保姆小兰，患儿豆豆", "阿芬"),
        ("陪护护工阿芬，保姆小兰，患儿豆豆", "小兰"),
        ("陪护护工阿芬，保姆小兰，患儿豆豆", "豆豆"),
        ("其哥哥大伟要求出院", "大伟"),
        ("小孩大名韩子墨，小名乐乐", "韩子墨"),
        ("小孩大名韩子墨，小名乐乐", "乐乐"),
        ("本人孟庆林，自愿签署", "孟庆林"),
        ("12床薛佳怡，术后第一天", "薛佳怡"),
        ("今日家属邓子明、邓子轩来访", "邓子轩"),
    ],
)
def test_chinese_name_families_found(text, name):
    assert name in found(text)


@pytest.mark.parametrize(
    "text",
    [
        "单位：某某公司　包括：阿莫西林",
        "华西医院心内科；龙胆泻肝丸；蓝色药片；陶瓷牙冠；平安保险；医术高明",
        "班主任陪同就诊；三楼医生办公室；值班医生查房；主管医生：未定",
        "检验：白细胞 12.3　审核：通过",
        "患者包括老人和儿童",
        "患者大便正常，小便通畅，家属大声喧哗",
        "乌兰察布市人；格桑花开",
        "本人同意手术，签字：",
        "| 时间 | 体温 | 签名 |\n| 08:00 | 36.8 | 已签 |",
        "| 项目 | 结果 |\n| 白细胞 | 正常 |",
        "病区护士长，值班护士等",
    ],
)
def test_chinese_ordinary_words_are_not_names(text):
    assert found(text) == set()
