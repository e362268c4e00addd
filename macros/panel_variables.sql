{#- The analysis panel's variable lists, owned here and nowhere else: fct_firm_years and
    macros/analysis_panel.sql (rpt_analysis_panel*, rpt_endogeneity_panel) build their columns
    from them, the singular test tests/data_tests/assert_panel_controls_within_winsor_bounds.sql
    checks them, and the Python tests read them (keytech.marts.panel_variables renders this
    macro). Order is the column order of the marts.

    panel_variables() returns {
      'outcomes':     patent counts of Table 3 (ln(1 + x) of each in the panels),
      'controls':     the paper's control variables in levels (Table 2),
      'winsorised':   the controls winsorised at winsor_lower/winsor_upper in the panels: all
                      controls but the dummy ifdome (所有控制变量都进行了 1% 的缩尾处理),
      'unwinsorised': levels carried into the panels as measured: sale and saleshare are Table 6
                      outcomes, not controls,
    } -#}
{% macro panel_variables() -%}
    {{ return({
        'outcomes': ['apply_inv_zl', 'apply_inv_nozl', 'apply_inv_zl_joint', 'grant_inv_zl',
                     'cite_inv_zl'],
        'controls': ['roa', 'lnage', 'ki', 'ifdome', 'size', 'kd', 'meangdp', 'infor', 'finsgov',
                     'fdi'],
        'winsorised': ['roa', 'lnage', 'ki', 'size', 'kd', 'meangdp', 'infor', 'finsgov', 'fdi'],
        'unwinsorised': ['sale', 'saleshare'],
    }) }}
{%- endmacro %}
