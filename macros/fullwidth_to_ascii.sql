{#- Full-width → ASCII, the part of Unicode NFKC that matters for vendor IPC strings.

    DuckDB has no NFKC normalisation. This macro maps the full-width block U+FF01–U+FF5E to
    U+0021–U+007E, the ideographic space U+3000 and the compatibility spaces U+00A0,
    U+2000–U+200A, U+202F and U+205F to an ASCII space: exactly what NFKC does to those
    characters (checked with Python's unicodedata when the macro was written). Other NFKC
    mappings (ligatures, circled digits, half-width katakana, ...) are not reproduced; see
    python/keytech/ipc.py for the reference implementation.
-#}
{%- macro fullwidth_to_ascii(expression) -%}
    translate(
        {{ expression }},
        '！＂＃＄％＆＇（）＊＋，－．／０１２３４５６７８９：；＜＝＞？＠ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ［＼］＾＿｀ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ｛｜｝～　              ',
        '!"#$%&''()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~               '
    )
{%- endmacro %}
