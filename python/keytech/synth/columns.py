"""Column names, vendor label rows and encodings of the raw files the generator writes."""

from __future__ import annotations

# CSMAR description rows (row 1: Chinese field names, row 2: units)
CSMAR_DESC = {
    "firm_info": (
        ["证券代码", "统计截止日期", "证券简称", "行业代码", "所属省份", "所属城市", "成立日期", "上市日期",
         "上市状态", "退市日期", "ST标识", "股权性质", "办公地所在城市"],
        ["没有单位"] * 13,
    ),
    "balance_sheet": (
        ["证券代码", "会计期间", "报表类型", "资产总计", "负债合计", "存货净额", "固定资产净额", "长期借款"],
        ["没有单位", "没有单位", "没有单位", "元", "元", "元", "元", "元"],
    ),
    "income_statement": (
        ["证券代码", "会计期间", "报表类型", "营业收入", "营业总收入", "净利润"],
        ["没有单位", "没有单位", "没有单位", "元", "元", "元"],
    ),
    "cash_flow": (
        ["证券代码", "会计期间", "报表类型", "经营活动产生的现金流量净额", "购建固定资产、无形资产和其他长期资产支付的现金",
         "分配股利、利润或偿付利息支付的现金", "现金分红总额"],
        ["没有单位", "没有单位", "没有单位", "元", "元", "元", "元"],
    ),
}
COLUMNS = {
    "firm_info": ["Stkcd", "Accper", "Stknme", "Nnindcd", "Provnm", "Ctnm", "Estbdt", "Listdt", "Statco",
                  "Delistdt", "Stflg", "Ownership", "OfficeCity"],
    "balance_sheet": ["Stkcd", "Accper", "Typrep", "A001000000", "A002000000", "A001123000", "A001212000",
                      "A002201000"],
    "income_statement": ["Stkcd", "Accper", "Typrep", "B001101000", "B001100000", "B002000000"],
    "cash_flow": ["Stkcd", "Accper", "Typrep", "C001000000", "C002006000", "C003006000", "CashDividends"],
    "patents": ["Scode", "ApplyNo", "ApplyDate", "PatentType", "IPC", "Applicants", "GrantDate", "CitedTimes"],
    "pilot_list": ["Wave", "AnnounceDate", "ProjectName", "UnitName", "Province", "City", "Category", "Stkcd",
                   "Industry"],
}
YEARBOOK_HEADER = [
    "城市", "年份", "人均地区生产总值(元)", "年末户籍人口(万人)", "互联网宽带接入用户数(万户)",
    "地方一般公共预算支出(万元)", "当年实际使用外资金额(万美元)", "第二产业从业人员(万人)", "从业人员合计(万人)",
]
YEARBOOK_UNITS = ["单位", "", "元", "万人", "万户", "万元", "万美元", "万人", "万人"]
FILE_ENCODING = {
    "firm_info": "utf-8-sig", "balance_sheet": "utf-8-sig", "income_statement": "utf-8",
    "cash_flow": "utf-8", "patents": "utf-8", "pilot_list": "utf-8", "city_yearbook": "gbk",
}
CORE_TABLES = ("firm_info", "balance_sheet", "income_statement", "cash_flow", "patents", "city_yearbook",
               "pilot_list")  # the plug-in worlds add their own (keytech.synth.generator.TABLES)
