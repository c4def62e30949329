"""Test fixture data: short medical QA plus long general chat, in Chinese and English.

Written for this project (not taken from any dataset). It reproduces, at small scale, the
length gap that makes domain SFT shorten a model's answers: medical answers are terse
(one or two sentences), general answers are long and complete. The tests build their tiny
tokenizer and model from it and train on it; the benchmarks use it too. Pure Python, no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

# Alpaca layout, about half Chinese and half English. Advice is standard and conservative.
MEDICAL: list[dict[str, str]] = [
    # --- Chinese ---
    {"instruction": "感冒了应该吃什么药？", "input": "",
     "output": "普通感冒多由病毒引起，一般不需要抗生素，多休息、多饮水即可，发热或头痛时可用对乙酰氨基酚缓解。症状超过一周或高热不退应就医。"},
    {"instruction": "发烧到多少度需要去医院？", "input": "",
     "output": "成人体温超过39℃且持续不退，或伴有呼吸困难、胸痛、意识改变、抽搐时应立即就医；三个月以下的婴儿只要发热就应尽快就诊。"},
    {"instruction": "高血压患者日常饮食要注意什么？", "input": "",
     "output": "每天食盐不超过5克，多吃蔬菜水果和全谷物，限制饮酒，控制体重，并坚持按医嘱服药、定期测量血压。"},
    {"instruction": "布洛芬可以空腹吃吗？", "input": "",
     "output": "布洛芬对胃黏膜有刺激，最好饭后服用；有胃溃疡或消化道出血史的人应在医生指导下使用。"},
    {"instruction": "糖尿病患者可以吃水果吗？", "input": "",
     "output": "血糖控制平稳时可以适量吃，选择苹果、柚子等升糖指数较低的水果，放在两餐之间吃，并计入全天碳水化合物总量。"},
    {"instruction": "孩子拉肚子怎么办？", "input": "",
     "output": "注意补充水分，可按说明服用口服补液盐预防脱水；如果尿量明显减少、精神差、便中带血或持续高热，应及时就医。"},
    {"instruction": "经常失眠怎么办？", "input": "",
     "output": "保持规律作息，睡前避免咖啡、酒精和长时间看手机；失眠持续超过一个月并影响白天生活时，建议到睡眠门诊就诊。"},
    {"instruction": "吃头孢期间能喝酒吗？", "input": "",
     "output": "不能。服用头孢类抗生素期间及停药后至少7天内都应避免饮酒，以免发生双硫仑样反应，出现面红、心慌、血压下降等症状。"},
    {"instruction": "胸口疼需要马上去医院吗？", "input": "",
     "output": "如果胸痛剧烈、呈压榨样，或伴有出汗、气短、疼痛放射到左臂或下颌，应立即拨打120，可能是心肌梗死。"},
    {"instruction": "缺铁性贫血吃什么好？", "input": "",
     "output": "多吃红肉、动物肝脏、动物血等富含铁的食物，同时搭配富含维生素C的蔬果促进吸收；是否需要补铁剂应由医生根据化验结果决定。"},
    {"instruction": "对青霉素过敏的人生病了怎么用药？", "input": "",
     "output": "就诊时一定要主动告知医生过敏史，由医生根据感染类型选择其他类别的药物，不要自行换药或服用含青霉素成分的药。"},
    {"instruction": "痛风发作时要注意什么？", "input": "",
     "output": "急性期应休息并抬高患肢，多喝水，避免饮酒和动物内脏、海鲜等高嘌呤食物；止痛药需在医生指导下使用。"},
    {"instruction": "颈椎病怎么缓解？", "input": "",
     "output": "避免长时间低头看手机或伏案工作，每隔一小时活动一下颈部，选择高度合适的枕头；如出现手臂麻木无力，应及时就医。"},
    {"instruction": "慢性胃炎平时怎么调理？", "input": "",
     "output": "规律进食，少吃辛辣、油腻和过烫的食物，戒烟限酒；幽门螺杆菌阳性者应在医生指导下进行根除治疗。"},
    {"instruction": "孕妇感冒了能吃药吗？", "input": "",
     "output": "孕期用药需谨慎，症状轻时以休息、多喝水为主；发热或症状加重时应咨询产科医生，不要自行服用感冒药。"},
    {"instruction": "哮喘患者平时要注意什么？", "input": "",
     "output": "避免接触花粉、尘螨、烟雾等诱发因素，按医嘱规律使用吸入药物，外出时随身携带缓解症状的急救药。"},
    {"instruction": "血脂高一定要吃药吗？", "input": "",
     "output": "是否用药要根据血脂水平和心血管风险综合判断；低脂饮食、规律运动、戒烟等生活方式干预是基础。"},
    {"instruction": "被狗咬伤了怎么办？", "input": "",
     "output": "立即用肥皂水和流动清水交替冲洗伤口至少15分钟，然后尽快到医院处理伤口，并按规定接种狂犬病疫苗。"},
    {"instruction": "口腔溃疡反复发作是怎么回事？", "input": "",
     "output": "常与熬夜、压力大、局部损伤或维生素缺乏有关，一般1到2周可自愈；如果溃疡超过两周不愈合，应到口腔科检查。"},
    {"instruction": "发生低血糖时应该怎么处理？", "input": "",
     "output": "立即吃15克左右的含糖食物，如半杯果汁或几块糖，15分钟后复测血糖；如果意识不清，不要喂食，应立即呼叫急救。"},
    {"instruction": "儿童发烧能用阿司匹林吗？", "input": "",
     "output": "不建议。儿童和青少年发热时使用阿司匹林可能引起瑞氏综合征，可在医生指导下选择对乙酰氨基酚或布洛芬。"},
    {"instruction": "根据描述给出就医建议。", "input": "男，35岁，咳嗽三天，无发热，无胸闷气短。",
     "output": "多为上呼吸道感染，可多喝水、注意休息，暂时观察；若咳嗽超过两周、出现发热、咳血或呼吸困难，应到呼吸科就诊。"},
    {"instruction": "请简要解释下面的检查结果。", "input": "空腹血糖 7.4 mmol/L。",
     "output": "空腹血糖正常应低于6.1 mmol/L，达到或超过7.0提示可能患有糖尿病，需要另一天复查或做糖化血红蛋白检测，请到内分泌科就诊。"},
    # --- English ---
    {"instruction": "What should I do for a sprained ankle?", "input": "",
     "output": "Rest it, apply ice for 15-20 minutes several times a day, use a compression wrap and keep it raised. See a doctor if you cannot bear weight or the pain and swelling get worse."},
    {"instruction": "How much acetaminophen can an adult take in a day?", "input": "",
     "output": "Healthy adults should not exceed 4,000 mg in 24 hours, and many doctors advise staying under 3,000 mg, less with liver disease or regular drinking. Check other medicines too, since many cold remedies also contain acetaminophen."},
    {"instruction": "When is a headache an emergency?", "input": "",
     "output": "Get emergency care for a sudden, severe headache, or one with fever and a stiff neck, confusion, weakness, vision loss, or after a head injury."},
    {"instruction": "Can I stop taking antibiotics once I feel better?", "input": "",
     "output": "No. Take the full course as prescribed unless your doctor tells you otherwise, because stopping early can let the infection come back."},
    {"instruction": "What are the warning signs of a stroke?", "input": "",
     "output": "Remember FAST: face drooping, arm weakness, speech difficulty, time to call emergency services. Sudden numbness, confusion or loss of vision are also warning signs."},
    {"instruction": "How can I lower my cholesterol without medication?", "input": "",
     "output": "Eat less saturated fat, more fiber from oats, beans and vegetables, exercise regularly and stop smoking. Recheck your levels with your doctor after about three months."},
    {"instruction": "What is a normal resting heart rate?", "input": "",
     "output": "For most adults it is 60 to 100 beats per minute, and trained athletes may be lower. A rate often above 100, or below 50 with dizziness, should be checked by a doctor."},
    {"instruction": "How should I treat a minor burn?", "input": "",
     "output": "Cool it under cool running water for about 20 minutes, then cover it loosely with a clean non-stick dressing. Do not apply butter or ice, and do not pop blisters."},
    {"instruction": "Is ibuprofen safe if I have high blood pressure?", "input": "",
     "output": "Ibuprofen and other NSAIDs can raise blood pressure and strain the kidneys, so ask your doctor or pharmacist before using them. Acetaminophen is often a safer choice for pain."},
    {"instruction": "What should people with diabetes check every day?", "input": "",
     "output": "Check blood sugar as your care team advises and look at your feet daily for cuts, blisters or redness. Take your medicines on schedule and know the signs of low blood sugar."},
    {"instruction": "How long does a common cold last?", "input": "",
     "output": "Most colds get better within 7 to 10 days. See a doctor for a high fever, trouble breathing, or symptoms that last longer than 10 days."},
    {"instruction": "How can I relieve heartburn?", "input": "",
     "output": "Eat smaller meals, avoid lying down for 3 hours after eating, and limit fatty or spicy food; an antacid can help. See a doctor if it happens more than twice a week."},
    {"instruction": "Should I worry about a mole that is changing?", "input": "",
     "output": "Yes, have it checked. A mole that is asymmetric, has an irregular border or several colors, is larger than 6 mm, or is changing should be examined by a dermatologist."},
    {"instruction": "How can I prevent urinary tract infections?", "input": "",
     "output": "Drink enough water, urinate after sex and do not hold urine for long. See a doctor for burning, frequent urination or fever, since antibiotics may be needed."},
    {"instruction": "What should I do if someone is choking?", "input": "",
     "output": "If they cannot cough, speak or breathe, call emergency services and give abdominal thrusts. If they can cough forcefully, encourage them to keep coughing."},
    {"instruction": "Is it normal to feel tired after a vaccine?", "input": "",
     "output": "Yes, tiredness, a sore arm and a mild fever for a day or two are common. Seek care right away for trouble breathing or swelling of the face or throat."},
    {"instruction": "How much sleep does an adult need?", "input": "",
     "output": "Most adults need 7 to 9 hours a night. Daytime sleepiness despite enough sleep, or loud snoring with pauses in breathing, should be evaluated by a doctor."},
    {"instruction": "What are the signs of dehydration?", "input": "",
     "output": "Thirst, dark urine, dry mouth, dizziness and tiredness are common. Confusion, very little urine or a racing heartbeat need urgent care."},
    {"instruction": "How can I manage asthma when I exercise?", "input": "",
     "output": "Warm up first and, if your doctor prescribed it, use your reliever inhaler about 15 minutes before activity. Stop and use it if you start wheezing or feel chest tightness."},
    {"instruction": "Do antihistamines make you sleepy?", "input": "",
     "output": "Older ones such as diphenhydramine often do, so avoid driving and alcohol while taking them. Newer ones like loratadine or cetirizine are much less sedating."},
    {"instruction": "When does back pain need a doctor?", "input": "",
     "output": "See a doctor if the pain follows a fall, lasts more than a few weeks, or comes with fever, weight loss or leg weakness. Loss of bladder or bowel control is an emergency."},
    {"instruction": "Can I give honey to my baby for a cough?", "input": "",
     "output": "Not before 12 months of age, because honey can cause infant botulism. For children over one, half to one teaspoon of honey can soothe a cough."},
    {"instruction": "Give brief advice for this patient.", "input": "Woman, 28, burning when urinating for two days, no fever.",
     "output": "This sounds like a possible bladder infection, so drink plenty of water and see a doctor for a urine test and treatment. Go sooner if fever, back pain or blood in the urine appears."},
]  # fmt: skip


def _chat(*turns: str) -> dict:
    """ShareGPT record from alternating human/gpt strings."""
    return {"conversations": [{"from": ("human", "gpt")[i % 2], "value": t} for i, t in enumerate(turns)]}


# ShareGPT layout, about half Chinese and half English; a few with two exchanges.
GENERAL: list[dict] = [
    # --- Chinese ---
    _chat(
        "如何提高时间管理能力？",
        "提高时间管理能力可以从以下几个方面入手。第一，明确目标：每天开始前列出当天最重要的三件事，先做重要的事，而不是最紧急或最容易的事。"
        "第二，合理安排时间块：把相似的任务集中处理，比如统一回复消息和邮件，减少频繁切换带来的注意力损耗。"
        "第三，减少干扰：工作时把手机调成静音或放在视线之外，可以尝试番茄工作法，专注25分钟后休息5分钟。"
        "第四，学会拒绝：对不重要的请求礼貌地说“不”，为真正重要的事情留出时间。"
        "最后，每天晚上花几分钟回顾当天的完成情况，看看时间花在了哪里，哪些可以改进。坚持几周后，你会明显感觉到效率的提升。",
    ),
    _chat(
        "请解释一下什么是复利。",
        "复利就是“利滚利”：每一期产生的利息会加入本金，下一期再一起计算利息。和它相对的是单利，单利只按最初的本金计算利息。"
        "举个例子：你存入10000元，年利率5%。按单利计算，每年利息都是500元，10年后共有15000元；按复利计算，第一年得到500元利息，"
        "第二年以10500元为本金得到525元，以此类推，10年后大约有16289元。时间越长，两者的差距越大，这就是人们常说的“复利效应”。"
        "复利告诉我们两件事：一是越早开始储蓄和投资越有利，因为时间是复利最重要的因素；二是借款同样适用复利，信用卡欠款如果长期不还，债务也会快速增长。",
    ),
    _chat(
        "帮我写一封请假邮件，我下周三要去参加家人的婚礼。",
        "好的，下面是一封简洁得体的请假邮件，你可以根据实际情况修改：\n\n"
        "主题：请假申请（下周三）\n\n"
        "王经理您好：\n\n"
        "我因需参加家人的婚礼，希望下周三（X月X日）请假一天。我已经安排好手头的工作：本周五前会完成项目报告的初稿，"
        "请假当天如有紧急事务，可由李明协助处理，我也会留意手机消息。\n\n"
        "如需调整，请您告知。感谢您的理解与支持！\n\n"
        "此致\n敬礼\n\n张华\nX月X日\n\n"
        "写请假邮件的要点是：说明原因和具体日期，交代好工作安排，语气礼貌，尽量提前提交。",
    ),
    _chat(
        "为什么天空是蓝色的？",
        "天空呈现蓝色，主要是因为大气对阳光的“瑞利散射”。太阳光看起来是白色的，其实由红、橙、黄、绿、蓝、紫等不同颜色的光组成，它们的波长各不相同。"
        "当阳光穿过大气层时，会碰到大量比光的波长小得多的气体分子。这种散射的强度与波长的四次方成反比，也就是说，波长越短的光越容易被散射。"
        "蓝光和紫光的波长较短，被散射得最多，于是从天空的各个方向进入我们的眼睛。紫光虽然散射得更强，但阳光中紫光本身较少，人眼对紫光也不太敏感，所以我们看到的天空是蓝色的。"
        "到了日出和日落时，阳光要穿过更厚的大气层，蓝光在途中大多被散射掉了，剩下的主要是红光和橙光，所以天边会呈现红色或橙色。",
    ),
    _chat(
        "番茄炒蛋怎么做才好吃？",
        "番茄炒蛋做法简单，掌握几个小技巧就能做得很好吃。\n\n"
        "材料：番茄2个，鸡蛋3个，葱少许，盐、糖适量。\n\n"
        "步骤：\n1. 番茄洗净切块，鸡蛋打散，加一点盐搅匀。\n"
        "2. 锅里多放一些油，烧热后倒入蛋液，待边缘凝固后轻轻推动，炒到八成熟就盛出，这样鸡蛋会比较嫩。\n"
        "3. 锅里留少许油，放入番茄块中火翻炒，炒出汁水后加一小勺糖，可以中和酸味、让味道更浓。\n"
        "4. 倒回鸡蛋，加盐调味，翻炒均匀后撒上葱花即可出锅。\n\n"
        "小提示：如果喜欢汤汁多一些，可以在炒番茄时加少量清水；番茄选熟透的，味道会更好。",
    ),
    _chat(
        "学习一门新语言有什么好方法？",
        "学习新语言没有捷径，但方法得当可以事半功倍。首先，设定具体的目标，比如“三个月后能用这门语言进行简单的日常对话”，目标越具体越容易坚持。"
        "其次，每天保持接触，哪怕只有20分钟，也比每周集中学习一次效果好，因为语言需要反复记忆。"
        "第三，多听多说：可以从慢速的播客、儿童动画或带字幕的影视剧开始，跟着模仿发音；找语言交换伙伴，或者对着镜子自言自语，都能锻炼口语。"
        "第四，在语境中学单词，不要孤立地背单词表，而是结合例句，并利用间隔重复的记忆软件定期复习。"
        "最后，不要害怕犯错，错误是学习过程的一部分。把学习和兴趣结合起来，比如用这门语言看喜欢的电影或读感兴趣的文章，会更容易坚持下去。",
    ),
    _chat(
        "一个笼子里有鸡和兔共35只，一共有94只脚，鸡和兔各有几只？",
        "这是经典的“鸡兔同笼”问题，可以用假设法来解。\n\n"
        "假设笼子里35只全是鸡，那么脚的总数应该是35×2=70只。但实际有94只脚，多出了94-70=24只。"
        "每把一只鸡换成一只兔，脚的数量就增加4-2=2只，所以兔的数量是24÷2=12只，鸡的数量是35-12=23只。\n\n"
        "验算：23只鸡有46只脚，12只兔有48只脚，46+48=94，正好符合题意。\n\n"
        "也可以用方程来解：设鸡有x只，兔有y只，则x+y=35，2x+4y=94，解得x=23，y=12。答案是鸡23只，兔12只。",
    ),
    _chat(
        "怎样准备一次工作面试？",
        "充分的准备能让你在面试中更从容。面试前，先仔细研究招聘岗位的要求和公司的业务、产品及文化，想清楚自己的经历与岗位有哪些匹配之处。"
        "然后准备几个具体的经历故事，用“情境—任务—行动—结果”的结构来讲，比如你如何解决一个难题、如何与团队合作，最好能给出可量化的结果。"
        "常见问题如自我介绍、为什么选择这家公司、你的优缺点等，要提前组织好语言并练习几遍，但不要死记硬背。"
        "还要准备两三个想问面试官的问题，例如团队目前的工作重点，这能体现你的兴趣和思考。"
        "面试当天注意着装得体，提前10到15分钟到达；如果是线上面试，要提前测试网络和设备。面试结束后，可以发一封简短的感谢邮件。",
    ),
    _chat(
        "请用通俗的话解释什么是机器学习。",
        "机器学习是让计算机从数据中自己总结规律的方法，而不是由人把每条规则都写好。"
        "举个例子，如果想让计算机识别垃圾邮件，传统做法是人工写规则，比如“包含‘中奖’就是垃圾邮件”，但规则很难写全。"
        "机器学习的做法是给计算机看成千上万封已经标注好的邮件，让它自己找出垃圾邮件的特征，之后再遇到新邮件时，它就能做出判断。"
        "这个“从数据中学习”的过程叫做训练，学到的结果叫做模型。数据越多、质量越好，模型通常就越准确。"
        "机器学习已经广泛应用在生活中，比如手机的人脸解锁、购物网站的商品推荐、语音助手和翻译软件等。"
        "需要注意的是，模型只能学到数据里有的东西，如果数据有偏差，模型的判断也可能出错。",
    ),
    _chat(
        "第一次租房需要注意什么？",
        "第一次租房，建议重点注意以下几点。\n\n"
        "1. 核实身份：签约前查看房东的房产证和身份证，确认对方有权出租；如果是二房东，要看到原房东同意转租的书面证明。\n"
        "2. 仔细看房：检查水电、燃气、门窗、热水器和空调是否正常，留意墙面有无渗水发霉，最好在不同时间段去看看周边的噪音和交通情况。\n"
        "3. 看清合同：租金、押金、付款方式、租期、维修责任和提前退租的条件都要写清楚，不要只做口头约定。\n"
        "4. 留存证据：入住时把房屋现状和家具家电拍照或录像，并请房东确认，退租时可以避免押金纠纷。\n"
        "5. 保留凭证：付款尽量通过银行转账，并保存好收据和聊天记录。\n\n"
        "做到这些，能帮你避开大部分常见的租房陷阱。",
    ),
    _chat(
        "我想开始跑步，应该怎么入门？",
        "开始跑步是个很好的决定！对于新手，最重要的是循序渐进，避免一开始就跑太多而受伤。\n\n"
        "建议从“跑走结合”开始：先快走5分钟热身，然后跑1分钟、走2分钟，重复6到8组，整个过程大约30分钟。"
        "每周逐渐增加跑步的时间、减少走路的时间，大约6到8周后，多数人可以连续跑20到30分钟。\n\n"
        "跑步时速度以能边跑边说完整的句子为宜，不必追求快。选一双合脚的跑鞋很重要，可以减少膝盖和脚踝的负担。"
        "跑完后做5到10分钟的拉伸，帮助肌肉放松。如果有心脏病、高血压等慢性病或者长期没有运动，开始之前最好先咨询医生。",
        "每周跑几次比较合适？",
        "对于刚入门的人，每周跑3次比较合适，最好隔天进行，比如周一、周三、周六。这样既能让身体逐渐适应，又给肌肉、关节留出恢复的时间。"
        "休息日可以散步、骑车或做一些力量练习，比如深蹲和平板支撑，增强腿部和核心力量，对预防跑步损伤很有帮助。\n\n"
        "坚持一两个月、身体适应以后，可以根据自己的感受增加到每周4次。增加跑量时有一个常用的原则：每周总跑量的增加不超过10%。"
        "如果出现持续的膝盖、小腿或脚跟疼痛，要及时休息，疼痛不缓解时应就医检查，不要硬撑。",
    ),
    _chat(
        "帮我写一段生日祝福，送给认识十年的好朋友。",
        "当然可以，这里有一段温暖又真诚的祝福，你可以根据你们的经历再加一些细节：\n\n"
        "亲爱的老朋友，生日快乐！不知不觉，我们已经认识十年了。这十年里，我们一起熬过考试前的夜晚，一起为彼此的好消息欢呼，"
        "也在对方最难的时候默默陪伴。很多人来了又走，而你一直都在，这份友情是我最珍贵的礼物之一。"
        "新的一岁，愿你身体健康，工作顺心，继续保持那份对生活的热爱和好奇。无论未来我们在哪座城市，我都会是你随叫随到的那个人。"
        "期待下一个十年，我们还能一起吃火锅、聊到深夜。生日快乐！\n\n"
        "如果想更有个人特色，可以加入一件只有你们俩知道的趣事，会让对方更感动。",
    ),
    _chat(
        "怎样和同事更好地沟通？",
        "良好的职场沟通可以减少误会、提高效率。首先，要学会倾听：别人说话时不要急着打断或反驳，先确认自己理解了对方的意思，可以用“你的意思是……对吗？”来复述。"
        "其次，表达要清楚具体：提需求时说明要做什么、为什么做、什么时候需要，避免“尽快”“差不多”这样模糊的说法。"
        "第三，选择合适的方式：简单的问题可以发消息，复杂或容易引起误会的事情最好当面或打电话沟通，重要的结论再用文字记录下来。"
        "第四，对事不对人：出现分歧时讨论的是方案本身，而不是评价对方的能力或态度。"
        "最后，及时反馈和感谢：别人帮了忙要说声谢谢，任务有变化要尽早告知。长期坚持，同事会更愿意和你合作。",
    ),
    _chat(
        "手机电池怎么用才能更耐久？",
        "现在的手机大多使用锂离子电池，正确的使用习惯可以延缓电池老化。第一，避免高温：高温是损伤电池的最大因素，不要把手机放在阳光直射的车里，"
        "边充电边玩大型游戏也会让手机发热，应尽量避免。第二，不必每次都用到没电再充，锂电池没有“记忆效应”，电量保持在20%到80%之间对电池最友好，"
        "很多手机也提供“优化充电”功能，可以打开。第三，使用原装或有质量认证的充电器和数据线，劣质充电器可能损伤电池，甚至带来安全隐患。"
        "第四，如果长期不用，最好把电量充到一半左右再存放。此外，如果发现电池明显鼓包，要立即停止使用并送修。",
    ),
    _chat(
        "什么是通货膨胀？",
        "通货膨胀是指一段时间内物价总体水平持续上涨，同样多的钱能买到的东西变少了，也就是货币的购买力下降。"
        "比如十年前一碗面10元，现在要15元，面还是那碗面，变的是钱的价值。"
        "通货膨胀的原因主要有几种：市场上流通的货币增长过快；需求旺盛而商品供应跟不上；原材料、能源或人工成本上涨，推高了商品价格。"
        "温和的通货膨胀（每年百分之二三）通常被认为对经济是正常的，而过高的通货膨胀会让人们的储蓄迅速缩水，影响生活和经济稳定。"
        "各国央行一般会通过调整利率等手段，把通货膨胀控制在合理的范围内。",
        "那普通人应该怎么应对？",
        "普通人可以从以下几个方面应对通货膨胀。\n\n"
        "第一，不要把所有钱都放在活期存款里。活期利率往往低于通胀率，长期来看钱会“变少”。可以根据自己的情况，把一部分资金配置到定期存款、国债或稳健型基金中。\n"
        "第二，保持合理的资产配置，分散风险。不要因为担心通胀就盲目追求高收益，高收益往往伴随着高风险，投资前要了解产品并量力而行。\n"
        "第三，投资自己。提升技能和收入能力是抵御通胀最可靠的方式之一。\n"
        "第四，理性消费，做好预算，避免不必要的开支和高息负债。\n\n"
        "最后，预留3到6个月生活费作为应急资金，这比追求收益更重要。",
    ),
    _chat(
        "请把这句话改得更正式一些：“这个方案我觉得不太行，咱们再改改吧。”",
        "可以改成：“经过评估，我认为当前方案仍有需要完善之处，建议我们进一步讨论并加以修改。”\n\n"
        "如果用于书面汇报，还可以更具体一些：“经初步评估，现有方案在成本控制和实施周期方面尚存在不足，建议在下周例会前进行修订，并补充相关数据支持。”\n\n"
        "修改的思路主要有三点：一是把口语词换成书面语，比如“不太行”改为“有待完善”，“咱们”改为“我们”；"
        "二是语气更加客观，用“经过评估”代替“我觉得”，让意见显得有依据；三是给出具体的问题和下一步建议，让对方知道该怎么做。"
        "在正式场合提出不同意见时，先肯定再指出问题、最后给出建议，会更容易被接受。",
    ),
    # --- English ---
    _chat(
        "How do I make good coffee with a French press?",
        "A French press is one of the easiest ways to make rich, full-bodied coffee at home. Start with fresh beans and grind them coarse, "
        "about the texture of sea salt; a fine grind will slip through the filter and make the coffee muddy and bitter. "
        "A good starting ratio is 1 gram of coffee to 15 grams of water, so for a 500 ml press use about 33 grams of coffee.\n\n"
        "Heat the water until it is just off the boil, around 93 to 96 degrees Celsius. Put the grounds in the press, pour in about a fifth of the water "
        "and wait 30 seconds so the coffee can release its gases, then add the rest of the water and stir gently. Put the lid on with the plunger pulled up "
        "and let it steep for four minutes.\n\n"
        "Press the plunger down slowly and steadily, then pour the coffee out right away. If you leave it sitting on the grounds it keeps extracting "
        "and turns bitter. If the taste is too weak, use a little more coffee next time; if it is too bitter, grind slightly coarser or shorten the steep.",
    ),
    _chat(
        "Can you explain how the internet works in simple terms?",
        "At its heart, the internet is a huge network of computers that agree to talk to each other using the same rules, called protocols. "
        "When you open a website, your device first needs to find where that website lives. It asks a Domain Name System server, which works like a phone book "
        "and translates a name such as example.com into a numeric IP address.\n\n"
        "Your device then sends a request to that address. The request is broken into small pieces called packets, and each packet travels through "
        "a series of routers, which pass it along toward its destination much like sorting offices pass letters from one post office to the next. "
        "Packets may take different routes and arrive out of order, but the receiving computer reassembles them correctly.\n\n"
        "The server that holds the website sends back the page in the same way, as packets, and your browser puts them together and displays the text, "
        "images and video. Most websites today use HTTPS, which encrypts this exchange so that others along the way cannot read it. "
        "All of this usually happens in well under a second.",
    ),
    _chat(
        "Write a short thank-you note to a colleague who helped me finish a project.",
        "Here is a warm, professional note you can adapt:\n\n"
        "Hi Sam,\n\n"
        "I wanted to say a real thank you for your help on the quarterly report. When the data came in late, you stayed on to help me clean it up "
        "and rebuild the charts, and your suggestion to lead with the regional summary made the whole thing much clearer. "
        "We delivered on time, and the feedback from the leadership team was very positive, which would not have happened without you.\n\n"
        "I really appreciate your generosity with your time, especially in a busy week. If I can return the favor on one of your projects, "
        "please let me know.\n\n"
        "Thanks again,\nAlex\n\n"
        "A good thank-you note names the specific thing the person did and the difference it made, which is what makes it feel sincere "
        "rather than routine. Keep it short and send it soon after the project ends.",
    ),
    _chat(
        "What is the difference between weather and climate?",
        "Weather and climate describe the same things, such as temperature, rain, wind and humidity, but over very different time scales. "
        "Weather is what the atmosphere is doing at a particular place and time: whether it is raining this afternoon, how cold it will be tomorrow "
        "morning, or whether a storm is coming this weekend. It can change within hours and is what a daily forecast predicts.\n\n"
        "Climate is the average pattern of weather in a region over a long period, usually 30 years or more. Saying that a city has hot, dry summers "
        "and mild, wet winters is a statement about its climate. Climate tells you what to expect, while weather tells you what you actually get.\n\n"
        "A simple way to remember it: climate is your wardrobe, weather is what you choose to wear today. This is also why one unusually cold day "
        "does not disprove a warming climate; a single day is weather, and climate is about long-term trends across many years and places.",
    ),
    _chat(
        "How can I start saving money on a small income?",
        "Saving on a small income is hard, but small, steady steps add up. Begin by tracking every expense for a month, using a notebook or a simple app. "
        "Most people find a few leaks they did not notice, such as subscriptions they rarely use, frequent takeaway meals or bank fees.\n\n"
        "Next, make a simple budget: list your fixed costs such as rent, utilities and transport, then decide on a realistic amount for food and other "
        "spending. Set a savings goal, even a small one like 5 percent of your income, and pay yourself first by moving that amount to a separate "
        "account on payday, ideally automatically, so you never see it in your spending account.\n\n"
        "Your first target should be an emergency fund, starting with one month of expenses and growing toward three. This protects you from "
        "expensive debt when something unexpected happens. If you have high-interest debt such as credit cards, pay that down as fast as you can, "
        "since the interest usually costs more than savings earn. Finally, review your budget every few months; as your income grows, "
        "raise your savings rate before your lifestyle catches up.",
    ),
    _chat(
        "A train leaves at 2:45 pm and the trip takes 1 hour 50 minutes. When does it arrive?",
        "The train arrives at 4:35 pm. Here is the step-by-step reasoning.\n\n"
        "Start with the departure time of 2:45 pm and add the hours first: 2:45 pm plus 1 hour is 3:45 pm. Then add the 50 minutes. "
        "It is easiest to split the minutes so you pass the hour cleanly: 15 minutes takes you from 3:45 pm to 4:00 pm, which leaves "
        "50 minus 15, or 35 minutes, still to add. Adding 35 minutes to 4:00 pm gives 4:35 pm.\n\n"
        "You can check it another way: 1 hour 50 minutes is 10 minutes short of 2 hours. Two hours after 2:45 pm is 4:45 pm, and 10 minutes "
        "earlier is 4:35 pm, which matches. Splitting minutes at the hour boundary, or rounding up and subtracting, are both reliable tricks "
        "for time arithmetic and help avoid the common mistake of getting 3:95.",
    ),
    _chat(
        "How do I write a good cover letter?",
        "A good cover letter is short, specific and written for one job. Aim for three or four paragraphs that fit on one page.\n\n"
        "In the opening paragraph, name the position and say in one or two sentences why you are interested and why you are a strong fit. "
        "Skip generic lines such as \"I am writing to apply\" and get to the point.\n\n"
        "In the middle paragraphs, pick two or three requirements from the job description and show, with concrete examples, how you have met "
        "them before. Use numbers where you can, for example \"cut response times by 30 percent\" or \"managed a team of five\". "
        "Do not repeat your resume line by line; instead tell the story behind the most relevant achievements.\n\n"
        "In the closing paragraph, explain briefly why you want to work for this particular organization, thank the reader, and say that you "
        "would welcome the chance to discuss the role. Address the letter to a named person if you can find one, keep the tone professional "
        "but natural, and proofread carefully, ideally after reading it aloud, since small errors stand out.",
    ),
    _chat(
        "Why do leaves change color in autumn?",
        "Leaves are green for most of the year because they are full of chlorophyll, the pigment that captures sunlight for photosynthesis. "
        "Chlorophyll is so abundant that it hides other pigments that are also in the leaf, such as yellow and orange carotenoids.\n\n"
        "In autumn, the days get shorter and the nights cooler. Many trees respond by preparing to drop their leaves for winter: they stop making "
        "new chlorophyll and begin to break down the existing chlorophyll so they can recover its nutrients. As the green fades, the yellows and "
        "oranges that were there all along become visible.\n\n"
        "Reds and purples come from a different group of pigments, anthocyanins, which some trees such as maples actively produce in autumn. "
        "Sunny days and cool, but not freezing, nights encourage more of them, which is why some years have especially vivid colors. "
        "Finally, a layer of cells forms where the leaf stem joins the branch, cutting the leaf off, and it falls.",
    ),
    _chat(
        "I want to learn Python. Where should I start?",
        "Python is a great first language because its syntax is clean and it is used everywhere, from data analysis to web development. "
        "Start by installing Python from the official website and a simple editor such as VS Code. Then work through the basics in this order: "
        "variables and types, lists and dictionaries, if statements, loops, functions, and reading and writing files.\n\n"
        "The official Python tutorial is free and well written, and many beginner courses cover the same ground with exercises. Whatever you choose, "
        "type the examples yourself rather than copying them, and change them to see what happens; that is how the ideas stick.\n\n"
        "As soon as you know the basics, start a tiny project that matters to you, such as a script that renames your photos, a budget calculator "
        "or a quiz game. Real projects force you to look things up, read error messages and solve problems, which is the core skill of programming. "
        "Practice a little every day, even 30 minutes, rather than in long, rare sessions.",
        "How long until I can build something useful?",
        "With regular practice of about 30 to 60 minutes a day, most beginners can write small but genuinely useful scripts within three to six weeks. "
        "Examples include a program that sorts files into folders, one that reads a spreadsheet and summarizes it, or one that fetches the weather "
        "and prints a short report.\n\n"
        "Larger projects, such as a small website with a database or a data analysis of your own, usually become realistic after two to four months, "
        "once you are comfortable with functions, modules, a few popular libraries and debugging.\n\n"
        "Progress is not linear. There will be weeks when things click and weeks when you feel stuck, and both are normal. The fastest learners "
        "are not the ones who read the most, but the ones who build the most, make mistakes and fix them. Pick projects slightly beyond "
        "your current level and you will keep improving steadily.",
    ),
    _chat(
        "What are some tips for public speaking?",
        "Public speaking gets much easier with preparation and practice. First, know your audience and your main message: if you can state the "
        "point of your talk in one sentence, the rest of the structure becomes easier to build. A simple structure works well, with an opening that "
        "tells people why they should care, two or three main points, and a short conclusion that repeats the key message.\n\n"
        "Practice out loud, not just in your head, ideally standing up and with a timer. Record yourself once; it is uncomfortable, but you will "
        "quickly notice filler words and rushed sections. Use notes with keywords rather than a full script, so you speak naturally instead of "
        "reading.\n\n"
        "On the day, arrive early to check the room and equipment. Nervousness is normal and often invisible to the audience; slow, deep breaths "
        "before you start help. Speak a little slower than feels natural, pause after important points, and make eye contact with different "
        "people around the room. If you lose your place, pause, look at your notes and continue. Most listeners are on your side.",
    ),
    _chat(
        "What is a spreadsheet formula? Can you give an example?",
        "A spreadsheet formula is an instruction that tells the spreadsheet to calculate a value from other cells. In programs such as Excel, "
        "Google Sheets or LibreOffice Calc, every formula starts with an equals sign, and the result updates automatically whenever the cells it "
        "refers to change.\n\n"
        "For example, suppose column A lists items, column B holds the quantity and column C the price. In cell D2 you could type =B2*C2 to get the "
        "total cost of the first item. If you drag that formula down, the spreadsheet adjusts the references automatically, so D3 becomes =B3*C3, and "
        "so on.\n\n"
        "To add up all the totals, you could put =SUM(D2:D20) at the bottom, where D2:D20 means every cell from D2 to D20. Other common functions "
        "include AVERAGE for the mean, MAX and MIN for the largest and smallest values, and IF for choices, such as =IF(D2>100, \"large\", \"small\"). "
        "Once you are comfortable with these, you can handle most everyday budgeting and tracking tasks.",
    ),
    _chat(
        "How do I keep houseplants alive?",
        "Most houseplants die from too much care rather than too little, usually from overwatering. The most important habit is to check the soil "
        "before watering: push a finger about two to three centimeters into the soil, and water only if it feels dry at that depth. When you do "
        "water, water thoroughly until it drains out of the bottom, and make sure the pot has drainage holes so the roots never sit in water.\n\n"
        "Light is the second key. Read the plant's label or look it up: succulents and cacti want bright, direct light, while plants such as pothos, "
        "snake plants and ZZ plants tolerate lower light. A plant that grows long and pale stems is asking for more light.\n\n"
        "Beyond that, keep plants away from cold drafts and hot radiators, wipe dust off large leaves now and then, and feed them with a diluted "
        "fertilizer during spring and summer only. If you are a beginner, start with forgiving plants like pothos or a snake plant and build your "
        "confidence before trying fussier ones.",
    ),
    _chat(
        "Summarize the pros and cons of working from home.",
        "Working from home has clear benefits. The biggest is time: no commute can give back an hour or more each day, and it saves money on "
        "transport and lunches. Many people find they can focus better without office interruptions, and the flexibility makes it easier to handle "
        "family needs, appointments or a personal schedule. For employers, it widens the pool of people they can hire.\n\n"
        "There are also real downsides. It can feel isolating, and casual conversations that build relationships and spread ideas happen less often. "
        "The line between work and home can blur, leading to longer hours and difficulty switching off. Not everyone has a quiet space or a good "
        "chair and desk, and newer employees may learn more slowly without colleagues nearby to ask.\n\n"
        "Many teams settle on a hybrid approach, with focused work at home and collaboration days in the office. Whichever model you use, clear "
        "working hours, a dedicated workspace and regular check-ins with colleagues make a big difference.",
    ),
    _chat(
        "Help me plan a three-day trip to a city I've never visited.",
        "Here is a flexible plan that works for most cities. Before you go, pick one neighborhood to stay in that is central and well connected by "
        "public transport, and book any must-see attractions that need timed tickets.\n\n"
        "Day 1: get your bearings. Take a walking tour or simply walk through the historic center, visit the main landmark, and have lunch at a local "
        "market. In the evening, find a viewpoint for sunset and eat somewhere the locals recommend rather than on the main square.\n\n"
        "Day 2: go deeper. Visit the museum or site you care most about in the morning, when crowds are smaller, then explore a different "
        "neighborhood in the afternoon, perhaps one known for food, art or shopping. Leave some unplanned time; the best moments often come from "
        "wandering.\n\n"
        "Day 3: do something different, such as a day trip nearby, a park, a boat ride or a cooking class. Keep the last afternoon light so you are "
        "not rushing to the airport or station. Tell me the city and your interests and I can make this much more specific.",
        "What should I pack?",
        "For a three-day city trip, a carry-on bag is usually enough. Pack clothes for the weather forecast in layers, such as two or three tops, "
        "one pair of trousers or a skirt, a light sweater and a compact rain jacket or umbrella. The single most important item is a pair of "
        "comfortable, already worn-in walking shoes, since you will likely walk 15,000 steps or more a day.\n\n"
        "Bring your ID or passport, a bank card plus a backup card, a little local cash, and copies of bookings saved on your phone. Do not forget "
        "your phone charger, a power bank and a plug adapter if the country uses different sockets.\n\n"
        "In a small day bag, carry a refillable water bottle, sunscreen, any regular medicines in their original packaging and a small snack. "
        "Leave a little space in your bag for anything you buy, and check the entry requirements for your destination a few weeks before you go.",
    ),
    _chat(
        "My computer has become really slow. How can I fix it?",
        "A slow computer usually has one of a few common causes, so work through them in order. First, restart it. It sounds too simple, but "
        "computers that run for weeks accumulate stuck processes and memory use, and a restart clears them.\n\n"
        "Next, see what is using resources. On Windows open Task Manager with Ctrl+Shift+Esc; on a Mac open Activity Monitor. Sort by CPU and "
        "memory, and close or uninstall programs you do not need. Also turn off unnecessary programs that start automatically when the computer "
        "boots, since they slow down every startup.\n\n"
        "Then check your storage. If the main drive is more than about 90 percent full, performance can drop noticeably, so delete large unused "
        "files and empty the trash. Install pending system updates and run a scan with your security software to rule out malware. "
        "If the computer is still slow and it has an old spinning hard drive, replacing it with an SSD or adding more memory is often the "
        "single biggest improvement for the money.",
    ),
    _chat(
        "What is the Pythagorean theorem and how is it used?",
        "The Pythagorean theorem describes right triangles, which are triangles with one 90-degree angle. It says that the square of the longest "
        "side, called the hypotenuse, equals the sum of the squares of the other two sides: a squared plus b squared equals c squared.\n\n"
        "For example, if the two shorter sides are 3 and 4 units long, then 3 squared plus 4 squared is 9 plus 16, which is 25, so the hypotenuse is "
        "the square root of 25, or 5 units. You can also run it backwards: if you know the hypotenuse and one side, you can find the other side.\n\n"
        "It is used far beyond math class. Builders use a 3-4-5 triangle to check that corners are square. It gives the straight-line distance between "
        "two points on a map or screen, which is how navigation apps and video games calculate distances. It also tells you, for instance, how long "
        "a ladder must be to reach a window at a given height when its base stands a certain distance from the wall.",
    ),
]  # fmt: skip


def write_sample(out_dir) -> dict[str, Path]:
    """Write `medical.jsonl` (alpaca) and `general.json` (ShareGPT) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    medical = out_dir / "medical.jsonl"
    medical.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in MEDICAL), encoding="utf-8")
    general = out_dir / "general.json"
    general.write_text(json.dumps(GENERAL, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return {"medical": medical, "general": general}


def sample_texts() -> list[str]:
    """Every string in the sample (questions, inputs, answers), to train the tiny tokenizer on."""
    texts = []
    for r in MEDICAL:
        texts += [t for t in (r["instruction"], r["input"], r["output"]) if t]
    for c in GENERAL:
        texts += [turn["value"] for turn in c["conversations"]]
    return texts


def sample_sources(folder: Path) -> list[dict]:
    """The sample written to `folder`, as a recipe's two sources: medical (domain) and general."""
    files = write_sample(folder)
    return [{"name": "medical", "path": str(files["medical"]), "role": "domain"},
            {"name": "general", "path": str(files["general"]), "role": "general"}]
